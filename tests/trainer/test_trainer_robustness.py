"""What a run checks and survives: SIGTERM like Ctrl-C, an output folder holding another run,
resuming only the same run, and start-up checks of everything the run will need."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import trainer_data

from xretrieve.core.errors import InputError
from xretrieve.core.interrupts import Terminated
from xretrieve.trainer import Trainer, config_from_dict
from xretrieve.trainer.checkpoint import STATE_FILE

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _raw(checkpoint: Path, out: Path, tasks: list[dict], max_steps: int = 6) -> dict:
    return trainer_data.run_config(
        checkpoint, out, tasks, optim={"max_steps": max_steps}, evaluation={"eval_every": 3}
    )


def _parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.encoder.state_dict().items()}


def test_sigterm_saves_a_resumable_checkpoint_like_ctrl_c(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    tasks = [trainer_data.write_pair_task(tmp_path / "data")]
    straight = Trainer(config_from_dict(_raw(tiny_xlmr_checkpoint, tmp_path / "a", tasks)))
    straight.train()

    def terminate_at_four(stage: str, done: int, total: int | None) -> None:
        if done == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    config = config_from_dict(_raw(tiny_xlmr_checkpoint, tmp_path / "b", tasks))
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        Trainer(config, progress=terminate_at_four).train()
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is only there while training
    assert (tmp_path / "b/checkpoint-4" / STATE_FILE).is_file()
    resumed = Trainer(config)
    assert resumed.train(resume=True).steps == 6
    expected, actual = _parameters(straight), _parameters(resumed)
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_cli_exits_143_on_sigterm_with_a_checkpoint(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    """A real process and a real signal: the scheduler's pre-emption path."""
    task = trainer_data.write_pair_task(tmp_path / "data", n_train=256)
    raw = _raw(tiny_xlmr_checkpoint, tmp_path / "out", [task], max_steps=100000)
    raw["evaluation"] = {"eval_every": 1, "save_every": 100000, "keep_best": False}
    config = tmp_path / "run.json.yaml"
    config.write_text(json.dumps(raw))  # JSON is YAML
    command = [sys.executable, "-c", "from xretrieve.cli.app import main; main()"]
    command += ["train", str(config), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = tmp_path / "out/metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr.decode()
    assert b"Traceback" not in stderr and b"SIGTERM" in stderr
    saved = sorted((tmp_path / "out").glob("checkpoint-*"))
    assert len(saved) == 1 and (saved[0] / STATE_FILE).is_file()
    step = int(saved[0].name.split("-")[1])
    last_evaluated = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert step >= 2 and step in (last_evaluated, last_evaluated + 1)


def test_a_fresh_run_refuses_a_folder_holding_another_run(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from xretrieve.cli.app import app

    tasks = [trainer_data.write_tag_task(tmp_path / "data")]
    raw = _raw(tiny_xlmr_checkpoint, tmp_path / "out", tasks, max_steps=2)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(raw))
    first = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert again.exit_code == 2
    assert "output_dir is not empty (checkpoint-2, metrics.jsonl" in again.stderr
    assert "--resume" in again.stderr and "--overwrite" in again.stderr
    broken = tmp_path / "broken.yaml"
    bad_data = tmp_path / "bad.jsonl"
    bad_data.write_text('{"tokens": ["a"], "tags": ["N", "V"]}\n')
    broken.write_text(json.dumps({**raw, "tasks": [{**tasks[0], "train": str(bad_data)}]}))
    failed = CliRunner().invoke(app, ["train", str(broken), "--no-progress", "--overwrite"])
    assert failed.exit_code == 2 and "1 words but 2 tags" in failed.stderr
    assert (tmp_path / "out/checkpoint-2").is_dir()  # a failed start deletes nothing
    (tmp_path / "out/notes.txt").write_text("mine")
    over = CliRunner().invoke(app, ["train", str(config), "--no-progress", "--overwrite"])
    assert over.exit_code == 0, over.output
    lines = (tmp_path / "out/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2]  # one history, not two
    assert (tmp_path / "out/notes.txt").read_text() == "mine"
    both = CliRunner().invoke(app, ["train", str(config), "--overwrite", "--resume"])
    assert both.exit_code == 2 and "cannot be combined" in both.stderr


def test_resume_continues_only_the_same_run(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    tasks = [trainer_data.write_pair_task(tmp_path / "data")]
    Trainer(config_from_dict(_raw(tiny_xlmr_checkpoint, tmp_path / "out", tasks, 3))).train()
    state = torch.load(tmp_path / "out/checkpoint-3" / STATE_FILE, weights_only=True)
    assert len(state["config_hash"]) == 64
    other = _raw(tiny_xlmr_checkpoint, tmp_path / "out", tasks, 3)
    other["optim"]["learning_rate"] = 5e-4
    other["seed"] = 1
    with pytest.raises(InputError, match=r"checkpoint-3: was written by a different run") as info:
        Trainer(config_from_dict(other)).train(resume=True)
    assert "optim.learning_rate" in str(info.value) and "seed" in str(info.value)
    # A checkpoint from before config hashes (and integrity records): its train_config.json
    # decides.
    del state["config_hash"]
    torch.save(state, tmp_path / "out/checkpoint-3" / STATE_FILE)
    (tmp_path / "out/checkpoint-3/.xretrieve.sha256").unlink()
    with pytest.raises(InputError, match="optim.learning_rate"):
        Trainer(config_from_dict(other)).train(resume=True)
    same = config_from_dict(_raw(tiny_xlmr_checkpoint, tmp_path / "out", tasks, 3))
    assert Trainer(same).train(resume=True).steps == 3
    # The same run moved to another folder is still the same run.
    moved = config_from_dict(_raw(tiny_xlmr_checkpoint, tmp_path / "moved", tasks, 3))
    assert Trainer(moved).train(resume=tmp_path / "out/checkpoint-3").steps == 3


def test_start_checks_retrieval_files_and_language_codes(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    retrieval = tmp_path / "retrieval"
    (retrieval / "tatoeba").mkdir(parents=True)
    (retrieval / "tatoeba/tatoeba.deu-eng.deu").write_text("Hund\nKatze\n")
    (retrieval / "tatoeba/tatoeba.deu-eng.eng").write_text("dog\ncat\n")
    tasks = [trainer_data.write_pair_task(tmp_path / "data")]

    def run(**retrieval_eval):
        raw = _raw(tiny_xlmr_checkpoint, tmp_path / "out", tasks)
        raw["retrieval_eval"] = {"data_dir": str(retrieval), **retrieval_eval}
        Trainer(config_from_dict(raw)).train()

    with pytest.raises(InputError, match=r"tatoeba.de-eng.de: .*three-letter codes"):
        run(tatoeba=["de"])
    with pytest.raises(InputError, match=r"bucc2018/deu-en.dev.deu: .*two-letter codes"):
        run(tatoeba=["deu"], bucc=["deu"])
    (retrieval / "tatoeba/tatoeba.deu-eng.eng").write_text("dog\n")
    with pytest.raises(InputError, match="has 1 lines but"):
        run(tatoeba=["deu"])
    (retrieval / "tatoeba/tatoeba.deu-eng.eng").write_text("dog\ncat\n")
    with pytest.raises(InputError, match=r"retrieval_eval.layers: layer 14 is out of range"):
        run(tatoeba=["deu"], layers=[14])
    assert not (tmp_path / "out").exists()  # all refused before anything was written


def test_max_length_beyond_the_model_positions(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    tasks = [trainer_data.write_pair_task(tmp_path / "data")]
    raw = _raw(tiny_xlmr_checkpoint, tmp_path / "out", tasks, 1)
    raw["tasks"] = [{**tasks[0], "max_length": 129}]  # 130 positions, XLM-R starts at 2
    with pytest.raises(
        InputError, match=r"the model has 128 usable positions .* tasks 'pairs' max_length = 129:"
    ):
        Trainer(config_from_dict(raw)).train()
    raw["tasks"] = [{**tasks[0], "max_length": 128}]
    assert Trainer(config_from_dict(raw)).train().steps == 1


def test_retrieval_layers_and_tatoeba_direction_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-layer keys as ``evaluate`` names the directions; scores by hand from planted vectors."""
    import numpy as np

    import xretrieve.encoding
    from xretrieve.trainer.config import RetrievalEvalConfig
    from xretrieve.trainer.retrieval_check import evaluate_retrieval

    (tmp_path / "tatoeba").mkdir()
    (tmp_path / "tatoeba/tatoeba.deu-eng.deu").write_text("a\nb\nc\n")
    (tmp_path / "tatoeba/tatoeba.deu-eng.eng").write_text("A\nB\nC\n")
    basis = np.eye(3, dtype=np.float32)
    # layer 1: every sentence matches its translation; layer 2: "b" and "c" swap on one side.
    vectors = {"a": [basis[0], basis[0]], "b": [basis[1], basis[2]], "c": [basis[2], basis[1]]}
    vectors.update(
        {"A": [basis[0], basis[0]], "B": [basis[1], basis[1]], "C": [basis[2], basis[2]]}
    )
    seen = {}

    class FakeEncoder:
        def encode_layers(self, texts):
            return np.stack([np.stack(vectors[t]) for t in texts])

    def fake_load(model, **kwargs):
        seen.update(kwargs)
        return FakeEncoder()

    monkeypatch.setattr(xretrieve.encoding, "load_encoder", fake_load)
    config = RetrievalEvalConfig(data_dir=tmp_path, tatoeba=("deu",), layers=(1, 2))
    metrics = evaluate_retrieval(tmp_path / "checkpoint-1", config)
    assert seen["layers"] == (1, 2)
    assert metrics == {
        "tatoeba/deu/layer1/accuracy_en2xx": 100.0,
        "tatoeba/deu/layer1/accuracy_xx2en": 100.0,
        "tatoeba/deu/layer2/accuracy_en2xx": pytest.approx(100 / 3),
        "tatoeba/deu/layer2/accuracy_xx2en": pytest.approx(100 / 3),
    }


def _cli(*args: str):
    from typer.testing import CliRunner

    from xretrieve.cli.app import app

    return CliRunner().invoke(app, ["train", *args, "--no-progress"])


def _refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_overwrite_never_deletes_an_input_inside_the_output_dir(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    """``base = "runs/p/checkpoint-2"`` with ``output_dir = "runs/p"`` and ``--overwrite`` used
    to delete the base checkpoint; every input of the config is protected the same way."""
    tasks = [trainer_data.write_tag_task(tmp_path / "data")]
    out = tmp_path / "runs/p"
    first = _cli(
        str(
            trainer_data.write_config(
                tmp_path / "run.yaml", _raw(tiny_xlmr_checkpoint, out, tasks, 2)
            )
        )
    )
    assert first.exit_code == 0, first.output
    base = out / "checkpoint-2"
    files = sorted(path.name for path in base.iterdir())
    raw = _raw(base, out, tasks, 2)
    _refused(
        _cli(str(trainer_data.write_config(tmp_path / "again.yaml", raw)), "--overwrite"),
        f"{out}: output_dir holds the input {base}",
    )
    assert sorted(path.name for path in base.iterdir()) == files
    # A data file kept in the output folder, an output folder inside the base checkpoint.
    moved = out / "tags.jsonl"
    moved.write_text(Path(tasks[0]["train"]).read_text())
    raw = _raw(tiny_xlmr_checkpoint, out, [{**tasks[0], "train": str(moved)}], 2)
    _refused(
        _cli(str(trainer_data.write_config(tmp_path / "data.yaml", raw)), "--overwrite"),
        "holds the input",
    )
    assert moved.is_file() and base.is_dir()
    raw = _raw(tiny_xlmr_checkpoint, tiny_xlmr_checkpoint / "run", tasks, 2)
    _refused(
        _cli(str(trainer_data.write_config(tmp_path / "in.yaml", raw))),
        "lies inside the input directory",
    )
    assert not (tiny_xlmr_checkpoint / "run").exists()
    # A checkpoint-N the trainer did not write is not the trainer's to replace.
    moved.unlink()
    (base / "train_config.json").unlink()
    raw = _raw(tiny_xlmr_checkpoint, out, tasks, 2)
    _refused(
        _cli(str(trainer_data.write_config(tmp_path / "foreign.yaml", raw)), "--overwrite"),
        "checkpoint-2: not written by the trainer",
    )
    assert sorted(path.name for path in base.iterdir()) == sorted(
        set(files) - {"train_config.json"}
    )


def test_output_dir_is_checked_before_the_data_is_read(
    tiny_xlmr_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only output folder (simulated: the tests run as root, for whom os.access says
    yes) and one that is a file are refused in one line, before any data file is read."""
    import xretrieve.trainer.loop as loop

    tasks = [trainer_data.write_tag_task(tmp_path / "data")]
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, *a, **k: (
            False if Path(path) == locked and mode & os.W_OK else real(path, mode, *a, **k)
        ),
    )

    def no_loading(source):  # noqa: ANN001, ANN202
        raise AssertionError("the model and data were loaded before the output check")

    monkeypatch.setattr(loop, "load_encoder_and_tokenizer", no_loading)
    raw = _raw(tiny_xlmr_checkpoint, locked / "run", tasks, 2)
    _refused(
        _cli(str(trainer_data.write_config(tmp_path / "ro.yaml", raw))),
        f"the directory {locked} is not writable",
    )
    assert list(locked.iterdir()) == []
    (tmp_path / "a-file").write_text("mine")
    raw = _raw(tiny_xlmr_checkpoint, tmp_path / "a-file", tasks, 2)
    _refused(
        _cli(str(trainer_data.write_config(tmp_path / "file.yaml", raw))),
        "output_dir must be a directory",
    )
    assert (tmp_path / "a-file").read_text() == "mine"


@pytest.fixture(scope="module")
def saved_run(tiny_xlmr_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A finished 3-step run with a resumable checkpoint-3, and its config."""
    root = tmp_path_factory.mktemp("saved-run")
    tasks = [trainer_data.write_pair_task(root / "data")]
    raw = _raw(tiny_xlmr_checkpoint, root / "out", tasks, 3)
    Trainer(config_from_dict(raw)).train()
    return root / "out", raw


def _damaged_copy(saved_run, tmp_path: Path, name: str, damage) -> Path:  # noqa: ANN001
    import shutil

    out, raw = saved_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    damage(copy / "checkpoint-3" / name)
    return trainer_data.write_config(tmp_path / "run.yaml", {**raw, "output_dir": str(copy)})


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the same size: safetensors and torch would load it without a word
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["heads.safetensors", "model.safetensors", STATE_FILE])
def test_resume_refuses_a_checkpoint_changed_at_the_same_size(
    saved_run, tmp_path: Path, name: str
) -> None:
    config = _damaged_copy(saved_run, tmp_path, name, _flip_a_byte)
    _refused(
        _cli(str(config), "--resume"),
        "checkpoint-3: damaged checkpoint",
        f"{name} changed since it was written (sha256 differs)",
    )


def test_resume_names_an_unreadable_heads_or_state_file(saved_run, tmp_path: Path) -> None:
    """Checkpoints of older versions carry no record: the files themselves are then checked."""
    from xretrieve.core.integrity import DIRECTORY_RECORD

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:100])
        (path.parent / DIRECTORY_RECORD).unlink()

    config = _damaged_copy(saved_run, tmp_path / "a", "heads.safetensors", truncate)
    _refused(_cli(str(config), "--resume"), "heads.safetensors: cannot read the task heads")

    def garbage(path: Path) -> None:
        path.write_bytes(b"not a pickle at all" * 10)
        (path.parent / DIRECTORY_RECORD).unlink()

    config = _damaged_copy(saved_run, tmp_path / "b", STATE_FILE, garbage)
    _refused(_cli(str(config), "--resume"), f"{STATE_FILE}: cannot read the trainer state")
    assert sorted(p.name for p in (tmp_path / "b/out").iterdir()) == [
        "checkpoint-3", "metrics.jsonl", "train_summary.json",
    ]  # fmt: skip


def test_a_saved_checkpoint_records_its_files(saved_run) -> None:
    from xretrieve.core.integrity import DIRECTORY_RECORD, verify_record

    checkpoint = saved_run[0] / "checkpoint-3"
    record = json.loads((checkpoint / DIRECTORY_RECORD).read_text())
    on_disk = {p.name for p in checkpoint.iterdir() if p.name != DIRECTORY_RECORD}
    assert set(record["files"]) == on_disk and verify_record(checkpoint / DIRECTORY_RECORD) is None
