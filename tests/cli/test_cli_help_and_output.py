"""Help and output details: every command's help (no ``<bool>`` on flags, no ``{name}`` braces
in usage lines, ``--progress`` explained, ``export --no-progress``), tables at their natural width
when stdout is not a terminal, mine's summary labels, thresholds with enough digits, output file
modes like any other file, and a CPU out-of-memory not called a GPU one."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from mining_fixtures import file_args
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.core.errors import XRetrieveError

COMMANDS = ("mine", "bucc", "tatoeba", "export", "embed", "train", "evaluate", "bench")
INDEX_COMMANDS = ("index build", "index verify")


@pytest.fixture(autouse=True)
def _plain_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As when stdout is a file or a pipe with no COLUMNS set (CliRunner's stdout is no terminal).
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "xcache"))


def _help(command: str) -> str:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS + INDEX_COMMANDS)
def test_help_has_no_bool_metavar_and_no_braces(command: str) -> None:
    text = _help(command)
    assert "<bool>" not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage


def test_usage_lines_name_arguments_in_capitals() -> None:
    assert "Usage: xretrieve export [OPTIONS] CHECKPOINT" in _help("export")
    assert "Usage: xretrieve embed [OPTIONS] MODEL INPUT" in _help("embed")
    assert "Usage: xretrieve bench [OPTIONS] [MODEL]" in _help("bench")
    assert "Usage: xretrieve index build [OPTIONS] EMB.NPY..." in _help("index build")
    assert "Usage: xretrieve index verify [OPTIONS] DIR" in _help("index verify")
    missing = CliRunner().invoke(app, ["export", "--out", "x"])
    assert missing.exit_code == 2 and "Missing argument" in missing.output


@pytest.mark.parametrize("command", (*COMMANDS, "index build"))
def test_progress_flag_is_explained_everywhere(command: str) -> None:
    line = next(line for line in _help(command).splitlines() if "--no-progress" in line)
    assert re.search(r"--no-progress\s+\S*\s*Progress bars? on stderr", line), line


def test_export_takes_no_progress(tiny_xlmr_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / ("a-rather-long-directory-name-for-the-export-" * 2) / "export"
    result = CliRunner().invoke(
        app, ["export", str(tiny_xlmr_checkpoint), "--out", str(out), "--dtype", "fp32",
              "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no bar
    # The table is not cut at 80 columns: the long path stays on one line.
    assert any(str(out) in line for line in result.stdout.splitlines()), result.stdout


def test_tables_keep_their_natural_width_off_a_terminal(capsys, monkeypatch) -> None:
    from xretrieve.cli.common import print_table

    cell = "x" * 150
    print_table("wide", ["a", "b"], [["short", cell], ["longer", 1.23456]])
    lines = capsys.readouterr().out.splitlines()
    assert any(cell in line for line in lines) and max(map(len, lines)) > 150
    assert any("1.23" in line for line in lines)
    monkeypatch.setenv("COLUMNS", "60")  # an explicit width is still obeyed
    print_table("wide", ["a", "b"], [["short", cell]])
    assert max(map(len, capsys.readouterr().out.splitlines())) <= 60


def _mine_args(root: Path) -> list[str]:
    return ["mine", "--no-progress", "--device", "cpu", *file_args(root)]


def test_mine_summary_defines_its_counts_and_shows_the_threshold(planted_bucc) -> None:
    root, _ = planted_bucc
    result = CliRunner().invoke(app, [*_mine_args(root), "--threshold", "1.0123456"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "candidates (pairs of distinct texts kept by --mode, any score)" in text
    assert "pairs (candidates with score >= threshold)" in text
    assert "rows (pairs, one per id of a repeated text: lines of --out)" in text
    assert re.search(r"│ threshold\s+│ 1\.01235\s+│", text), text
    summary = json.loads(CliRunner().invoke(app, [*_mine_args(root), "--json"]).stdout)
    assert {"candidates", "pairs", "rows"} <= set(summary)  # JSON keys unchanged


def test_bucc_table_shows_the_tuned_threshold_with_its_digits(planted_bucc) -> None:
    root, _ = planted_bucc
    args = ["bucc", "--no-progress", "--device", "cpu", "--data-dir", str(root / "data"),
            "--langs", "de", "--emb-dir", str(root / "emb")]  # fmt: skip
    threshold = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)["de"]["threshold"]
    assert round(threshold, 2) != round(threshold, 5)  # two decimals would lose something
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert f"{threshold:.6g}" in table.stdout, table.stdout


@pytest.fixture()
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_embed_npy_has_the_mode_of_other_outputs(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, umask_022
) -> None:
    text = tmp_path / "in.txt"
    text.write_text("the cat\nle chat\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    result = CliRunner().invoke(
        app, ["embed", str(tiny_xlmr_checkpoint), str(text), "--out", str(out), "--device", "cpu",
              "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _mode(out) == 0o644
    os.umask(0o077)
    out.unlink()
    assert CliRunner().invoke(
        app, ["embed", str(tiny_xlmr_checkpoint), str(text), "--out", str(out), "--device", "cpu",
              "--no-progress"],
    ).exit_code == 0  # fmt: skip
    assert _mode(out) == 0o600  # the umask is respected, not overridden


def test_trainer_checkpoint_files_have_the_mode_of_other_outputs(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, umask_022
) -> None:
    import trainer_data

    from xretrieve.trainer import Trainer, config_from_dict

    task = trainer_data.write_pair_task(tmp_path / "data", n_train=16, n_val=8)
    raw = trainer_data.run_config(
        tiny_xlmr_checkpoint, tmp_path / "out", [task], max_length=16, optim={"max_steps": 1}
    )
    config = config_from_dict(raw)
    result = Trainer(config).train()
    checkpoint = result.last_checkpoint
    assert _mode(checkpoint / "model.safetensors") == 0o644
    assert _mode(checkpoint / "heads.safetensors") == 0o644
    assert all(_mode(path) == 0o644 for path in checkpoint.iterdir() if path.is_file())
    assert _mode(checkpoint) == 0o755


def test_atomic_directory_leaves_links_targets_alone(tmp_path: Path, umask_022) -> None:
    from xretrieve.core.files import atomic_directory

    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o600)
    with atomic_directory(tmp_path / "dir") as staging:
        (staging / "sub").mkdir(mode=0o700)
        (staging / "sub" / "f").write_text("y")
        (staging / "sub" / "f").chmod(0o600)
        (staging / "link").symlink_to(outside)
    assert _mode(tmp_path / "dir" / "sub") == 0o755
    assert _mode(tmp_path / "dir" / "sub" / "f") == 0o644
    assert _mode(outside) == 0o600


class _CpuOom:
    """A backend on the CPU whose every batch runs out of (host) memory."""

    provider, dim, n_layers = "CPUExecutionProvider", 4, 1

    def run(self, input_ids, attention_mask):  # noqa: ANN001, ANN201
        raise MemoryError("cannot allocate")

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, MemoryError)

    def release_memory(self) -> None:
        return None


def test_cpu_out_of_memory_is_not_called_gpu_memory(tiny_xlmr_checkpoint: Path, caplog) -> None:
    from xretrieve.encoding.encoder import SentenceEncoder
    from xretrieve.encoding.tokenize import TextTokenizer

    tokenizer = TextTokenizer.from_directory(tiny_xlmr_checkpoint)
    encoder = SentenceEncoder(_CpuOom(), tokenizer, name="cpu", layers=(2,))
    with pytest.raises(XRetrieveError) as info:
        encoder.encode(["the cat sat", "le chat"])
    message = str(info.value)
    assert message.startswith("out of memory on a single sentence")
    assert "GPU" not in message and "--device cpu" not in message
    assert all("GPU" not in record.getMessage() for record in caplog.records)


def test_torch_backend_recognises_the_cpu_allocator_failing(tiny_xlmr_checkpoint: Path) -> None:
    import torch

    from xretrieve.encoding.torch_backend import TorchBackend

    backend = TorchBackend(tiny_xlmr_checkpoint, layers=(-1,), pooling="mean", normalize=True)
    try:
        torch.empty(1 << 60, dtype=torch.uint8)
    except RuntimeError as error:
        real_error = error
    assert backend.is_out_of_memory(real_error)
    assert backend.is_out_of_memory(MemoryError())
    assert not backend.is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.parametrize(
    "args",
    [
        ["mine", "--src-file", "{missing}", "--tgt-file", "{missing}", "--threshold", "1.1"],
        ["bucc", "--data-dir", "{tmp}", "--langs", "de"],
        ["tatoeba", "--data-dir", "{tmp}", "--langs", "deu"],
        ["index", "build", "{missing}", "--out", "{tmp}/ix"],
        ["evaluate", "default", "--data-dir", "{tmp}", "--out", "{tmp}/ev", "--langs", "xxx"],
        ["export", "{missing}", "--out", "{tmp}/exp"],
    ],
)
def test_an_early_error_is_one_line_with_progress_bars_on(tmp_path, args) -> None:
    """Bars start drawing at the first progress report: a command whose checks fail first
    prints its error line and nothing else, with the bars on (the default)."""
    from typer.testing import CliRunner

    from xretrieve.cli.app import app

    filled = [a.format(missing=tmp_path / "missing.txt", tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, filled)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
