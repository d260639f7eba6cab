"""Outputs that cannot be written (``--out`` on a directory, under a regular file, in a
read-only directory, ``export --out .``) are refused by one check before any work starts:
exit 2, one line naming the path, no model loaded or exported, nothing written.

The tests run as root, for whom a chmod-ed directory stays writable: a read-only directory is
simulated by making ``os.access`` say no for it (the check asks ``os.access``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.core import outputs
from xretrieve.core.errors import InputError


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "xcache"
    monkeypatch.setenv("XRETRIEVE_CACHE", str(root))
    return root


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain.txt"
    path.write_text("the cat\nle chat\n", encoding="utf-8")
    return path


def _read_only(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    real = os.access

    def access(path, mode, *args, **kwargs):  # noqa: ANN001, ANN202 - os.access's signature
        if Path(path) == directory and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_writable_outputs_pass(tmp_path: Path) -> None:
    assert outputs.check_output_path(tmp_path / "new.npy") == tmp_path / "new.npy"
    assert outputs.check_output_path(tmp_path / "a" / "b" / "new.npy") == tmp_path / "a/b/new.npy"
    (tmp_path / "old.npy").write_bytes(b"")
    outputs.check_output_path(tmp_path / "old.npy")  # replaced atomically
    outputs.check_output_path(tmp_path / "export", directory=True)
    (tmp_path / "export").mkdir()
    outputs.check_output_path(tmp_path / "export", directory=True)


def test_refusals_name_the_path(
    tmp_path: Path, a_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="^[^ ]*: out is a directory") as info:
        outputs.check_output_path(tmp_path)
    assert info.value.path == tmp_path
    with pytest.raises(InputError, match=f"{a_file} is a file, not a directory"):
        outputs.check_output_path(a_file / "out.npy")
    with pytest.raises(InputError, match=f"{a_file} is a file, not a directory"):
        outputs.check_output_path(a_file / "deeper" / "out.npy")
    with pytest.raises(InputError, match="out must be a directory; this is a file"):
        outputs.check_output_path(a_file, directory=True)
    here = tmp_path / "here"
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here / "sub")
    for current in (Path("."), Path(".."), here, Path("")):
        with pytest.raises(InputError, match="current directory or contains it"):
            outputs.check_output_path(current, directory=True)
    _read_only(monkeypatch, tmp_path / "locked")
    (tmp_path / "locked").mkdir()
    with pytest.raises(InputError, match=f"the directory {tmp_path / 'locked'} is not writable"):
        outputs.check_output_path(tmp_path / "locked" / "new" / "out.npy", option="--plot")


def _no_work_done(cache: Path) -> None:
    assert not (cache / "exports").exists(), "the model was exported before the output check"


def _refused(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and text in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_embed_out_on_a_directory(tiny_xlmr_checkpoint: Path, tmp_path: Path, a_file, cache):
    directory = tmp_path / "a-directory"  # not one holding the input, which is refused as such
    directory.mkdir()
    result = CliRunner().invoke(
        app, ["embed", str(tiny_xlmr_checkpoint), str(a_file), "--out", str(directory),
              "--device", "cpu", "--no-progress"],
    )  # fmt: skip
    _refused(result, f"{directory}: --out is a directory")
    _no_work_done(cache)


@pytest.mark.parametrize("backend", ("ort", "torch"))
def test_embed_out_under_a_file_or_in_a_read_only_directory(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, a_file, cache, monkeypatch, backend
) -> None:
    args = ["embed", str(tiny_xlmr_checkpoint), str(a_file), "--device", "cpu",
            "--backend", backend, "--no-progress", "--out"]  # fmt: skip
    _refused(CliRunner().invoke(app, [*args, str(a_file / "x.npy")]), "is a file, not a directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    _read_only(monkeypatch, locked)
    _refused(CliRunner().invoke(app, [*args, str(locked / "x.npy")]), "is not writable")
    assert list(locked.iterdir()) == []
    _no_work_done(cache)


def test_embed_file_checks_before_reading(tmp_path: Path) -> None:
    from xretrieve.encoding import embed_file

    with pytest.raises(InputError, match="output_path is a directory"):
        embed_file(None, tmp_path / "missing.txt", tmp_path)  # type: ignore[arg-type]


def test_mine_out_is_checked_before_embedding(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, a_file, cache
) -> None:
    args = ["mine", "--src-file", str(a_file), "--tgt-file", str(a_file),
            "--model", str(tiny_xlmr_checkpoint), "--device", "cpu", "--no-progress", "--out"]  # fmt: skip
    _refused(CliRunner().invoke(app, [*args, str(tmp_path)]), "--out is a directory")
    _refused(CliRunner().invoke(app, [*args, str(a_file / "p.tsv")]), "is a file, not a directory")
    _no_work_done(cache)


def test_export_out_dot_or_a_file(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, a_file, monkeypatch
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    args = ["export", str(tiny_xlmr_checkpoint), "--dtype", "fp32", "--no-progress", "--out"]
    _refused(CliRunner().invoke(app, [*args, "."]), "current directory")
    assert sorted(os.listdir(tmp_path)) == ["here", "plain.txt"] and os.listdir(here) == []
    _refused(CliRunner().invoke(app, [*args, str(a_file)]), "must be a directory; this is a file")
    _refused(CliRunner().invoke(app, [*args, str(a_file / "ex")]), "is a file, not a directory")
    assert a_file.read_text(encoding="utf-8") == "the cat\nle chat\n"


def test_bench_plot_is_checked_before_benchmarking(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, a_file, cache
) -> None:
    args = ["bench", str(tiny_xlmr_checkpoint), "--backends", "ort", "--sentences", "4",
            "--knn-size", "0", "--device", "cpu", "--no-progress", "--plot"]  # fmt: skip
    _refused(CliRunner().invoke(app, [*args, str(tmp_path)]), "--plot is a directory")
    _refused(CliRunner().invoke(app, [*args, str(a_file / "b.png")]), "is a file")
    _no_work_done(cache)


def test_the_guard_refuses_inputs_their_ancestors_and_directory_inputs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    text = data / "de.txt"
    text.write_text("x\n", encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir()
    inputs = [text, model]
    for out, directory, message in [
        (text, False, "is an input"),
        (data / "." / "de.txt", False, "is an input"),
        (data, True, "holds the input"),
        (tmp_path, True, "holds the input"),
        (model, True, "is an input"),
        (model / "emb", True, "lies inside the input directory"),
        (model / "pairs.tsv", False, "lies inside the input directory"),
    ]:
        with pytest.raises(InputError, match=message):
            outputs.check_output_path(out, directory=directory, inputs=inputs)
    link = tmp_path / "link.txt"
    link.symlink_to(text)
    with pytest.raises(InputError, match="is an input"):
        outputs.check_output_path(link, inputs=inputs)
    outputs.check_output_path(data / "pairs.tsv", inputs=inputs)  # beside a file input: fine


def test_the_guard_replaces_only_a_directory_its_owner_recognises(tmp_path: Path) -> None:
    def disowns(directory: Path) -> str | None:
        names = {p.name for p in directory.iterdir()}
        return None if names <= {"own.json", "part-0"} and "own.json" in names else "not ours"

    owner = outputs.OutputOwner("demo", disowns)
    out = tmp_path / "out"
    out.mkdir()
    outputs.check_output_path(out, directory=True, owner=owner)  # empty
    (out / "own.json").write_text("{}")
    outputs.check_output_path(out, directory=True, owner=owner)  # ours
    with pytest.raises(InputError, match="non-empty directory: give a new or empty"):
        outputs.check_output_path(out, directory=True)  # no owner: only new or empty
    (out / "notes.txt").write_text("keep\n")
    with pytest.raises(InputError, match=r"not an earlier demo output \(not ours\)"):
        outputs.check_output_path(out, directory=True, owner=owner)
    assert (out / "notes.txt").read_text() == "keep\n"
