"""``embed --ray`` on a local Ray cluster (2 CPUs, started once here): the shards concatenated
equal the single-process ``embed_file`` output; a rerun resumes (only missing or damaged shards
are redone), other settings are refused, a killed actor is restarted with identical output, and
without Ray the option names the install command. Errors raised in actors, an unreachable
cluster and SIGTERM or Ctrl-C to the driver (a ``--ray local`` run in a subprocess) end as in
the single-process path: exit code 2, 143 or 130, one line, nothing half-written."""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.core.errors import InputError

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]

LINES = [f"sentence number {i} " + "word " * (i % 7) for i in range(23)] + ["", "le chat"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    # Set before the cluster starts, so that its workers find the same model cache.
    cache = tmp_path_factory.mktemp("ray-embed-cache")
    old = os.environ.get("XRETRIEVE_CACHE")
    os.environ["XRETRIEVE_CACHE"] = str(cache)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("XRETRIEVE_CACHE")
    else:
        os.environ["XRETRIEVE_CACHE"] = old


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray-embed-input") / "in.txt"
    path.write_text("\ufeff" + "\n".join(LINES), encoding="utf-8")  # BOM, no final newline
    return path


@pytest.fixture(scope="module")
def single_process(cluster, tiny_xlmr_checkpoint: Path, text_file: Path) -> np.ndarray:
    from xretrieve.encoding import embed_file, load_encoder

    out = text_file.parent / "single.npy"
    embed_file(load_encoder(str(tiny_xlmr_checkpoint), batch_tokens=64), text_file, out)
    return np.load(out)


def _spec(checkpoint: Path):
    from xretrieve.encoding.distributed import EncoderSpec

    return EncoderSpec(str(checkpoint), batch_tokens=64)


def _concatenated(directory: Path) -> np.ndarray:
    from xretrieve.formats.embedding_shards import shard_paths

    return np.concatenate([np.load(p) for p in shard_paths(directory)])


def test_scan_cuts_shards_by_line_count_alone(tmp_path: Path) -> None:
    from xretrieve.encoding.distributed import scan_input
    from xretrieve.encoding.streaming import read_line_windows

    path = tmp_path / "t.txt"
    path.write_bytes(b"a\nbb\n\nccc\r\nd")
    scan = scan_input(path, 2)
    assert scan.lines == 5 and [(j.first_line, j.lines) for j in scan.jobs] == [
        (0, 2),
        (2, 2),
        (4, 1),
    ]
    got = [
        line
        for job in scan.jobs
        for window in read_line_windows(path, 1, start_byte=job.start_byte, lines=job.lines)
        for line in window
    ]
    assert got == ["a", "bb", "", "ccc", "d"]
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert scan_input(empty, 3).lines == 0 and scan_input(empty, 3).jobs == ()


def test_shards_equal_the_single_process_embedding_and_resume(
    cluster, tiny_xlmr_checkpoint: Path, text_file: Path, single_process: np.ndarray, tmp_path: Path
) -> None:
    from xretrieve.encoding.distributed import RayEmbedder

    out = tmp_path / "shards"
    first = RayEmbedder("local").run(_spec(tiny_xlmr_checkpoint), text_file, out, shard_lines=7)
    assert (first.embedded, first.skipped) == (4, 0) and first.shape == (25, 32)
    np.testing.assert_allclose(_concatenated(out), single_process, atol=1e-6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["first_line"] for s in manifest["shards"]] == [0, 7, 14, 21]
    assert manifest["settings"]["input_lines"] == 25

    # A missing shard file and a damaged one are redone; the other two are kept as they are.
    (out / "shard-00001.npy").unlink()
    with (out / "shard-00003.npy").open("r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\0\0\0\0")
    kept = (out / "shard-00000.npy").stat().st_mtime_ns
    again = RayEmbedder("local").run(_spec(tiny_xlmr_checkpoint), text_file, out, shard_lines=7)
    assert (again.embedded, again.skipped) == (2, 2)
    assert (out / "shard-00000.npy").stat().st_mtime_ns == kept
    np.testing.assert_allclose(_concatenated(out), single_process, atol=1e-6)
    assert json.loads((out / "manifest.json").read_text()) == manifest

    # Complete: nothing to do, Ray not even needed.
    done = RayEmbedder("local").run(_spec(tiny_xlmr_checkpoint), text_file, out, shard_lines=7)
    assert (done.embedded, done.skipped) == (0, 4)


def test_other_settings_are_refused_unless_overwrite(
    cluster, tiny_xlmr_checkpoint: Path, text_file: Path, single_process: np.ndarray, tmp_path: Path
) -> None:
    from xretrieve.encoding.distributed import RayEmbedder
    from xretrieve.encoding.streaming import OutputDtype

    out = tmp_path / "shards"
    embedder = RayEmbedder("local")
    embedder.run(_spec(tiny_xlmr_checkpoint), text_file, out, shard_lines=10)
    with pytest.raises(
        InputError, match=r"other settings \(shard_lines: 10 -> 12\).*overwrite=True"
    ):
        embedder.run(_spec(tiny_xlmr_checkpoint), text_file, out, shard_lines=12)
    changed = tmp_path / "changed.txt"
    changed.write_text("other\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"input_bytes.*input_sha256"):
        embedder.run(_spec(tiny_xlmr_checkpoint), changed, out, shard_lines=10)
    redone = embedder.run(
        _spec(tiny_xlmr_checkpoint),
        text_file,
        out,
        shard_lines=12,
        out_dtype=OutputDtype.FP16,
        overwrite=True,
    )
    assert redone.embedded == 3 and sorted(p.name for p in out.glob("shard-*")) == [
        "shard-00000.npy",
        "shard-00001.npy",
        "shard-00002.npy",
    ]
    got = _concatenated(out)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, single_process, atol=2e-3)


def test_a_foreign_non_empty_directory_is_refused(
    cluster, tiny_xlmr_checkpoint: Path, text_file: Path, tmp_path: Path
) -> None:
    from xretrieve.encoding.distributed import RayEmbedder

    (tmp_path / "notes.txt").write_text("mine\n", encoding="utf-8")
    with pytest.raises(InputError, match="not an earlier embed ray=True output"):
        RayEmbedder("local").run(_spec(tiny_xlmr_checkpoint), text_file, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_killed_actor_is_restarted_and_its_shard_redone(
    cluster, tiny_xlmr_checkpoint: Path, text_file: Path, single_process: np.ndarray, tmp_path: Path
) -> None:
    from xretrieve.encoding.distributed import RayEmbedder

    embedder = RayEmbedder("local", pool_size=2, max_restarts=2)
    pids: list[int] = []

    def kill_first_actor(stage: str, done: int, total: int | None) -> None:
        if done == 1:
            pids.append(ray.get(embedder.actors[0].pid.remote()))
            os.kill(pids[0], signal.SIGKILL)
        if done == total:
            pids.append(ray.get(embedder.actors[0].pid.remote()))

    out = tmp_path / "shards"
    result = embedder.run(
        _spec(tiny_xlmr_checkpoint), text_file, out, shard_lines=4, progress=kill_first_actor
    )
    assert result.embedded == 7
    assert len(pids) == 2 and pids[0] != pids[1]  # a new process holds the encoder
    np.testing.assert_allclose(_concatenated(out), single_process, atol=1e-6)


def test_cli_embeds_on_ray_and_index_build_reads_the_directory(
    cluster, tiny_xlmr_checkpoint: Path, text_file: Path, single_process: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    args = [str(tiny_xlmr_checkpoint), str(text_file), "--out", str(out), "--batch-tokens", "64"]
    result = CliRunner().invoke(
        app, ["embed", *args, "--ray", "local", "--shard-lines", "9", "--no-progress", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_shards"] == 3
    assert "3 shards embedded, 0 already complete" in result.stderr
    np.testing.assert_allclose(_concatenated(out), single_process, atol=1e-6)
    refused = CliRunner().invoke(
        app, ["embed", *args, "--ray", "local", "--shard-lines", "8", "--no-progress"]
    )
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    index = CliRunner().invoke(
        app, ["index", "build", str(out), "--out", str(tmp_path / "idx"), "--json", "--no-progress"]
    )
    assert index.exit_code == 0, index.output
    sources = json.loads(index.stdout)["sources"]
    assert [Path(s["path"]).name for s in sources] == [f"shard-0000{i}.npy" for i in range(3)]


def test_without_ray_the_option_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tiny_xlmr_checkpoint: Path, text_file: Path, tmp_path: Path
) -> None:
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = CliRunner().invoke(
        app,
        ["embed", str(tiny_xlmr_checkpoint), str(text_file), "--out", str(tmp_path / "d")]
        + ["--ray", "local", "--no-progress"],
    )
    assert result.exit_code == 2
    assert "--ray needs the 'ray' package: pip install 'xretrieve[distributed]'" in result.stderr
    assert not (tmp_path / "d").exists()


def test_encoder_spec_refuses_a_bad_backend_or_device_before_ray_starts() -> None:
    from xretrieve.core.errors import XRetrieveError
    from xretrieve.core.settings import Backend, Device
    from xretrieve.encoding.distributed import EncoderSpec

    spec = EncoderSpec("m", "torch", "cpu")
    assert (spec.backend, spec.device) == (Backend.TORCH, Device.CPU)
    with pytest.raises(XRetrieveError, match="unknown backend 'onnx'"):
        EncoderSpec("m", backend="onnx")
    with pytest.raises(XRetrieveError, match="unknown device 'tpu'"):
        EncoderSpec("m", device="tpu")


@pytest.fixture(scope="module")
def tiny_export(tiny_xlmr_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp32 export, so that a subprocess embeds without exporting on first use."""
    from exporters import ExportConfig, export_checkpoint

    out = tmp_path_factory.mktemp("ray-export") / "export"
    export_checkpoint(tiny_xlmr_checkpoint, out, ExportConfig(dtype="fp32", optimize=False))
    return out


@pytest.fixture(scope="module")
def loud_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export without normalisation whose last LayerNorm scales every value by 1e6: its
    embeddings exceed float16's range, which only the actor writing a shard finds out."""
    from safetensors.torch import load_file, save_file
    from tiny_models import make_tiny_checkpoint

    from exporters import ExportConfig, export_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path_factory.mktemp("loud") / "checkpoint")
    weights = load_file(str(checkpoint / "model.safetensors"))
    weights["encoder.layer.1.output.LayerNorm.weight"] *= 1e6
    save_file(weights, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    out = checkpoint.parent / "export"
    config = ExportConfig(dtype="fp32", normalize=False, optimize=False)
    export_checkpoint(checkpoint, out, config)
    return out


def _one_error_line(stderr: str) -> str:
    """The error line, after checking that it is the only one and the last (Ray may log its
    start-up before it) and that no traceback was printed."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    return errors[0]


def test_an_error_raised_in_a_task_reaches_the_driver_as_itself(cluster) -> None:
    from xretrieve.core.ray_cluster import get_result

    @ray.remote
    def fail() -> None:
        raise InputError(Path("data/in.txt"), "invalid UTF-8", line=3)

    with pytest.raises(InputError) as caught:
        get_result(fail.remote())
    assert type(caught.value) is InputError
    assert (caught.value.path, caught.value.line) == (Path("data/in.txt"), 3)
    assert str(caught.value) == "data/in.txt:3: invalid UTF-8"


def test_an_error_in_an_actor_exits_2_with_one_line(
    cluster, loud_export: Path, text_file: Path, tmp_path: Path
) -> None:
    """float16 overflow is found by the actor writing the shard: the driver reports it as the
    single-process embed does."""
    out = tmp_path / "shards"
    result = CliRunner().invoke(
        app,
        ["embed", str(loud_export), str(text_file), "--out", str(out), "--ray", "local",
         "--out-dtype", "fp16", "--shard-lines", "9", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr) == (
        f"error: {text_file}:1: embedding values exceed float16's range (65504); write them "
        "with --out-dtype fp32"
    )
    assert not list(out.glob(".*.tmp"))


def test_invalid_utf8_is_refused_before_anything_is_created(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    source = tmp_path / "bad.txt"
    source.write_bytes(b"fine\n" * 3 + b"bad \xff here\nfine\n")
    out = tmp_path / "shards"
    result = CliRunner().invoke(
        app,
        ["embed", str(tiny_xlmr_checkpoint), str(source), "--out", str(out), "--ray", "local",
         "--shard-lines", "2", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert _one_error_line(result.stderr) == (
        f"error: {source}:4: invalid UTF-8 (byte 0xff at column 5); the input must be UTF-8 "
        "text, one sentence per line"
    )
    assert not out.exists()


def test_a_split_multibyte_character_is_not_invalid(tmp_path: Path) -> None:
    """The scan checks UTF-8 in blocks: a character across a block boundary is still valid."""
    from xretrieve.encoding import distributed

    path = tmp_path / "t.txt"
    path.write_bytes("aé\nbé\n".encode())
    original = distributed._BLOCK_BYTES
    try:
        distributed._BLOCK_BYTES = 2  # "a" + the first byte of "é"
        scan = distributed.scan_input(path, 1)
    finally:
        distributed._BLOCK_BYTES = original
    assert scan.lines == 2 and [j.start_byte for j in scan.jobs] == [0, 4]


def _cli_process(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from xretrieve.cli.app import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.mark.parametrize(
    ("address", "env"),
    [("ray://127.0.0.1:1", {}), ("127.0.0.1:1", {}), ("auto", {"RAY_ADDRESS": "127.0.0.1:1"})],
)
def test_an_unreachable_cluster_exits_2_without_creating_anything(
    tiny_export: Path, text_file: Path, tmp_path: Path, address: str, env: dict[str, str]
) -> None:
    """Nothing listens on port 1: one line and exit code 2, not Ray's retries for minutes (the
    timeout only stops a hanging run), and no --out directory."""
    out = tmp_path / "shards"
    process = _cli_process(
        ["embed", str(tiny_export), str(text_file), "--out", str(out), "--ray", address,
         "--no-progress"],
        env,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2, stderr
    line = _one_error_line(stderr)
    assert line.startswith(f"error: cannot reach a Ray cluster at '{address}': nothing answers")
    assert not out.exists()


def _finished_shards(out: Path) -> int:
    from xretrieve.core.errors import InputError
    from xretrieve.formats.embedding_shards import read_shards_manifest

    try:
        manifest = read_shards_manifest(out) if out.is_dir() else None
    except InputError:  # being replaced
        return 0
    return 0 if manifest is None else len(manifest.shards)


@pytest.mark.parametrize(
    ("signum", "code", "message", "address"),
    [
        (signal.SIGTERM, 143, "terminated (SIGTERM)", "local"),
        (signal.SIGINT, 130, "interrupted", "local"),
        (signal.SIGINT, 130, "interrupted", "this test's cluster"),
    ],
)
def test_a_signal_mid_run_cleans_up_and_a_rerun_resumes(
    cluster,
    tiny_export: Path,
    tmp_path: Path,
    signum: int,
    code: int,
    message: str,
    address: str,
) -> None:
    """SIGTERM (a scheduler pre-empting the job) and Ctrl-C reach the driver while its actors
    embed: it exits 143 or 130 after stopping them, with no temporary file left and a manifest
    that lists exactly the finished shards; the same command then resumes. The driver starts a
    cluster of its own (``--ray local``, whose shutdown also stops the actors) or joins one
    that stays up (where only the driver's own clean-up removes what the killed actors left)."""
    from xretrieve.core.integrity import file_matches
    from xretrieve.encoding.distributed import EncoderSpec, RayEmbedder
    from xretrieve.formats.embedding_shards import read_shards_manifest

    if address != "local":
        address = ray.get_runtime_context().gcs_address
    # Shards of 2000 lines take about a second each: when the first is written, the actors are
    # busy with others, whose temporary files the signal interrupts.
    source = tmp_path / "many.txt"
    source.write_text("".join(f"line {i} the cat sat on the mat\n" for i in range(24_000)))
    out = tmp_path / "shards"
    process = _cli_process(
        ["embed", str(tiny_export), str(source), "--out", str(out), "--ray", address,
         "--shard-lines", "2000", "--no-progress"]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        # The manifest, not the shard file: the driver records a shard after its actor wrote it.
        while not _finished_shards(out) and process.poll() is None:
            assert time.monotonic() < deadline, "no shard was written"
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == message, stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    manifest = read_shards_manifest(out)
    assert manifest is not None and 0 < len(manifest.shards) < manifest.n_shards == 12
    for entry in manifest.shards:
        assert file_matches(out / entry.file, entry.bytes, entry.sha256)

    spec = EncoderSpec(str(tiny_export))
    resumed = RayEmbedder("local").run(spec, source, out, shard_lines=2000)
    assert (resumed.skipped, resumed.embedded) == (len(manifest.shards), 12 - len(manifest.shards))
    assert resumed.manifest.complete and resumed.shape == (24_000, 32)


def test_the_model_folder_is_no_ray_output(tiny_xlmr_checkpoint: Path, text_file: Path) -> None:
    before = sorted(tiny_xlmr_checkpoint.iterdir())
    for extra in ([], ["--overwrite"]):
        result = CliRunner().invoke(
            app,
            ["embed", str(tiny_xlmr_checkpoint), str(text_file), "--out",
             str(tiny_xlmr_checkpoint), "--ray", "local", "--no-progress", *extra],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert _one_error_line(result.stderr) == (
            f"error: {tiny_xlmr_checkpoint}: --out is an input ({tiny_xlmr_checkpoint}): writing "
            "there would destroy it"
        )
    assert sorted(tiny_xlmr_checkpoint.iterdir()) == before


def test_overwrite_refuses_an_export_directory(
    tiny_xlmr_checkpoint: Path, tiny_export: Path, text_file: Path
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in tiny_export.iterdir()}
    result = CliRunner().invoke(
        app,
        ["embed", str(tiny_xlmr_checkpoint), str(text_file), "--out", str(tiny_export),
         "--ray", "local", "--overwrite", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "is a non-empty directory that is not an earlier embed --ray output" in (
        _one_error_line(result.stderr)
    )
    assert {p.name: p.stat().st_mtime_ns for p in tiny_export.iterdir()} == before
