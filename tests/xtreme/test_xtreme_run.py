"""``xtreme run`` and ``xtreme predict`` end to end on tiny checkpoints and a tiny XTREME download
of all nine tasks in every language: per-language predictions in the submission layout, scores
through ``xtreme score``'s scorer, the grid; resuming after an interruption (a progress callback
raising KeyboardInterrupt, and a real SIGTERM), re-running exactly what changed, seeds, an extra
target task, ``predict`` equal to what ``run`` wrote, and the error contract."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner
from xtreme_fixtures import write_config, write_xtreme

from xretrieve.cli.app import app
from xretrieve.core.errors import InputError
from xretrieve.xtreme import TASK_NAMES, score_submission, task_by_name
from xretrieve.xtreme.predict import predict_xtreme
from xretrieve.xtreme.run import RunRequest, run_xtreme
from xretrieve.xtreme.targets import EXTRA_TARGETS, TargetKind, TargetTask

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def intermediate_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny XLM-R (other weights): the 'intermediate-task' row of the grid."""
    from tiny_models import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "intermediate", seed=1)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_xlmr_checkpoint, intermediate_checkpoint):
    """All nine tasks, a baseline and one intermediate checkpoint, one seed; test splits with
    labels (Hugging Face exports, BUCC test gold, LASER's Tatoeba)."""
    base = tmp_path_factory.mktemp("full")
    data = write_xtreme(base / "data")
    config = write_config(base / "recipes.toml")
    request = RunRequest(
        checkpoints=(intermediate_checkpoint,),
        baseline=tiny_xlmr_checkpoint,
        data_dir=data,
        out_dir=base / "out",
        config=config,
        device="cpu",
    )
    summary = run_xtreme(request)
    return request, summary


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def test_all_nine_tasks_write_predictions_scores_and_the_grid(full_run) -> None:
    request, summary = full_run
    out = request.out_dir
    assert summary.kept == () and len(summary.ran) == 2 * 9
    grid = json.loads((out / "grid.json").read_text())
    assert grid == summary.grid
    for folder in ("tiny-xlmr0", "intermediate"):
        for name in TASK_NAMES:
            task = task_by_name(name)
            unit = (
                out
                / "units"
                / folder
                / name
                / ("" if name in ("bucc2018", "tatoeba") else "seed-1")
            )
            record = json.loads((unit / "unit.json").read_text())
            assert record["scores"]["test"]["complete"] is True
            for lang in task.languages:  # a prediction file for every language of the task
                assert task.path(unit / "predictions" / "test", lang).is_file()
    base, intermediate = grid["splits"]["test"]["rows"]
    assert (base["checkpoint"], base["baseline"], base["delta"]) == ("tiny-xlmr0", True, None)
    assert intermediate["checkpoint"] == "intermediate"
    # The grid's numbers are those of the one scorer on the submission folder.
    for row, folder in ((base, "tiny-xlmr0"), (intermediate, "intermediate")):
        submission = out / "submissions" / folder / "seed-1"
        scores = score_submission(submission / "test", out / "labels" / "test")
        assert row["all_task"]["mean"] == pytest.approx(scores.all_task)
        for score in scores.tasks:
            assert row["tasks"][score.task.name]["mean"] == pytest.approx(score.avg_metric)
        for group, value in scores.groups.items():
            assert row["groups"][group.value]["mean"] == pytest.approx(value)
    delta = intermediate["delta"]
    assert delta["all_task"] == pytest.approx(
        intermediate["all_task"]["mean"] - base["all_task"]["mean"]
    )
    assert set(intermediate["resource_mean"]) >= {"high", "medium", "low"}
    markdown = (out / "grid.md").read_text()
    assert "| checkpoint | pawsx | xnli | panx | udpos | bucc2018 | tatoeba | xquad | mlqa" in (
        markdown
    )
    assert "tiny-xlmr0 (baseline)" in markdown and "difference to the baseline" in markdown
    assert "mean pooling of hidden state 1 of 2 layers" in markdown  # XTREME's middle layer
    for plot in ("test_delta.png", "test_resource_groups.png", "dev_delta.png"):
        assert (out / "plots" / plot).stat().st_size > 0


def test_checkpoints_are_selected_on_the_english_dev_set_only(full_run) -> None:
    request, _ = full_run
    units = request.out_dir / "units" / "intermediate"
    record = json.loads((units / "xnli/seed-1/unit.json").read_text())
    assert record["fine_tuning"]["selected_on"] == "dev-en.tsv"
    assert record["fine_tuning"]["metric"] == "xnli/accuracy"
    assert json.loads((units / "panx/seed-1/unit.json").read_text())["fine_tuning"]["metric"] == (
        "panx/f1"
    )
    mlqa = json.loads((units / "mlqa/seed-1/unit.json").read_text())["fine_tuning"]
    assert mlqa["selected_on"] == "dev-context-en-question-en.json"
    # XTREME's layout has no labelled TyDiQA dev set: the last checkpoint is kept.
    assert (
        json.loads((units / "tydiqa/seed-1/unit.json").read_text())["fine_tuning"]["selected_on"]
        is None
    )
    model = units / "xnli/seed-1/model"
    assert (model / "heads.json").is_file() and not (model / "trainer_state.pt").exists()
    assert not (units / "xnli/seed-1/train").exists()


@pytest.mark.parametrize("task", ["xnli", "panx", "mlqa"])
def test_predict_equals_what_run_wrote(full_run, task: str, tmp_path: Path) -> None:
    request, _ = full_run
    unit = request.out_dir / "units" / "intermediate" / task / "seed-1"
    summary = predict_xtreme(unit / "model", task, request.data_dir, tmp_path / "p", device="cpu")
    assert _files(tmp_path / "p" / "predictions") == _files(unit / "predictions")
    record = json.loads((unit / "unit.json").read_text())
    for split in ("dev", "test"):
        assert summary.scores[split].to_json() == record["scores"][split]


def test_predict_command_prints_the_scores(full_run, tmp_path: Path) -> None:
    request, _ = full_run
    model = request.out_dir / "units" / "tiny-xlmr0" / "pawsx" / "seed-1" / "model"
    args = ["xtreme", "predict", str(model), "--task", "pawsx", "--data-dir", str(request.data_dir)]
    args += ["--out", str(tmp_path / "p"), "--device", "cpu", "--no-progress", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    record = json.loads((model.parent / "unit.json").read_text())
    assert payload["scores"]["test"]["avg_metric"] == pytest.approx(
        record["scores"]["test"]["avg_metric"]
    )
    # Again into its own earlier output; a task without a head in the checkpoint is refused.
    assert CliRunner().invoke(app, args).exit_code == 0
    other = [*args[:3], "--task", "xnli", *args[5:]]
    refused = CliRunner().invoke(app, other)
    assert refused.exit_code == 2 and "has no task 'xnli'" in refused.stderr


SUBSET = ("pawsx", "udpos", "tatoeba")


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, tiny_xlmr_checkpoint):
    """Three tasks, one checkpoint, run without interruption."""
    base = tmp_path_factory.mktemp("subset")
    data = write_xtreme(base / "data", labelled_test=False)
    request = RunRequest(
        checkpoints=(tiny_xlmr_checkpoint,),
        data_dir=data,
        out_dir=base / "out",
        tasks=SUBSET,
        config=write_config(base / "recipes.toml"),
        device="cpu",
    )
    return request, run_xtreme(request)


def _copy_run(request: RunRequest, tmp_path: Path) -> RunRequest:
    """The run's data, config and output folder copied elsewhere (fingerprints hold relative
    paths: the copy's units stay finished)."""
    for name in ("data", "out"):
        shutil.copytree(request.data_dir.parent / name, tmp_path / name)
    shutil.copy(request.config, tmp_path / "recipes.toml")
    return RunRequest(
        **{
            **request.__dict__,
            "data_dir": tmp_path / "data",
            "out_dir": tmp_path / "out",
            "config": tmp_path / "recipes.toml",
        }
    )


def _scores(grid: dict) -> dict:
    return grid["splits"]


def test_xtreme_layout_test_files_are_predicted_but_not_scored(subset_run) -> None:
    request, summary = subset_run
    unit = request.out_dir / "units" / "tiny-xlmr0" / "pawsx" / "seed-1"
    assert (unit / "predictions" / "test" / "pawsx" / "test-ko.tsv").is_file()
    record = json.loads((unit / "unit.json").read_text())
    assert record["scores"]["test"] is None and record["scores"]["dev"]["complete"] is True
    assert set(summary.grid["splits"]) == {"dev"}  # no labelled test file in XTREME's layout
    assert not (request.out_dir / "labels" / "test" / "pawsx").exists()


def test_an_interrupted_run_resumes_with_the_rest(subset_run, tmp_path: Path) -> None:
    request, complete = subset_run
    request = RunRequest(**{**request.__dict__, "out_dir": tmp_path / "out"})

    def stop_after_first_unit(stage: str, done: int, total: int | None) -> None:
        if stage == "units" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_xtreme(request, progress=stop_after_first_unit)
    assert not list(tmp_path.rglob("*.tmp"))
    resumed = run_xtreme(request)
    assert resumed.kept == ("tiny-xlmr0 pawsx seed 1",)
    assert resumed.ran == ("tiny-xlmr0 udpos seed 1", "tiny-xlmr0 tatoeba")
    assert _scores(resumed.grid) == _scores(complete.grid)


def test_an_interrupted_fine_tuning_continues_from_its_checkpoint(
    subset_run, tmp_path: Path
) -> None:
    request, complete = subset_run
    request = RunRequest(**{**request.__dict__, "out_dir": tmp_path / "out", "tasks": ("udpos",)})

    def stop_in_training(stage: str, done: int, total: int | None) -> None:
        if stage.endswith(": train") and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_xtreme(request, progress=stop_in_training)
    unit = tmp_path / "out" / "units" / "tiny-xlmr0" / "udpos" / "seed-1"
    assert (unit / "train" / "checkpoint-1" / "trainer_state.pt").is_file()
    assert not (unit / "unit.json").exists()
    resumed = run_xtreme(request)
    assert resumed.ran == ("tiny-xlmr0 udpos seed 1",)
    expected = json.loads(
        (complete.out_dir / unit.relative_to(tmp_path / "out") / "unit.json").read_text()
    )
    assert json.loads((unit / "unit.json").read_text())["scores"] == expected["scores"]


def test_changed_data_or_recipe_reruns_only_what_it_touches(subset_run, tmp_path: Path) -> None:
    request, _ = subset_run
    copy = _copy_run(request, tmp_path)
    assert run_xtreme(copy).ran == ()
    with open(copy.data_dir / "pawsx" / "dev-de.tsv", "a", encoding="utf-8") as handle:
        handle.write("a new\tpair\t1\r\n")
    assert run_xtreme(copy).ran == ("tiny-xlmr0 pawsx seed 1",)
    with open(copy.config, "a", encoding="utf-8") as handle:
        handle.write("\n[udpos]\nlearning_rate = 5e-4\n")
    assert run_xtreme(copy).ran == ("tiny-xlmr0 udpos seed 1",)


def test_sigterm_stops_the_run_cleanly_and_the_rerun_keeps_what_finished(
    subset_run, tmp_path: Path
) -> None:
    request, complete = subset_run
    out = tmp_path / "out"
    args = [sys.executable, "-m", "xretrieve.cli.app", "xtreme", "run", str(request.checkpoints[0])]
    args += ["--data-dir", str(request.data_dir), "--out", str(out), "--tasks", "pawsx,udpos"]
    args += ["--config", str(request.config), "--device", "cpu", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = out / "units" / "tiny-xlmr0" / "udpos" / "seed-1" / "pending.json"
    deadline = time.monotonic() + 300
    while not second.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr.decode()
    assert not list(out.rglob("*.tmp")) and not (second.parent / "unit.json").exists()
    resumed = run_xtreme(
        RunRequest(**{**request.__dict__, "out_dir": out, "tasks": ("pawsx", "udpos")})
    )
    assert resumed.kept == ("tiny-xlmr0 pawsx seed 1",)
    assert resumed.ran == ("tiny-xlmr0 udpos seed 1",)


@dataclass(frozen=True)
class FakeRecipe:
    base: float = 10.0


@dataclass(frozen=True)
class FakeOutcome:
    scores: dict
    fine_tuned: Path | None = None
    dev_scores: dict = field(default_factory=dict)
    predictions: Path | None = None

    def to_json(self) -> dict:
        return {"scores": self.scores, "fine_tuned": None}


def _fake_files(data_dir: Path) -> list[Path]:
    return [data_dir / "pawsx" / "dev-de.tsv"]


def _fake_runner(checkpoint, data_dir, out_dir, *, seed, recipe, device, progress):
    out_dir.mkdir(parents=True)
    (out_dir / "called.json").write_text(json.dumps({"seed": seed, "base": recipe.base}))
    shutil.copy(out_dir / "called.json", out_dir.parent / "called.json")
    base = recipe.base
    return FakeOutcome({"de": {"recall_at_1": base + seed}, "sw": {"recall_at_1": base + 2 * seed}})


def test_seeds_and_an_extra_target_task(subset_run, tmp_path: Path, monkeypatch) -> None:
    request, _ = subset_run
    extra = TargetTask(
        name="fake_image_text",
        kind=TargetKind.EXTERNAL,
        main_metric="recall_at_1",
        runner=f"{__name__}:_fake_runner",
        recipe=f"{__name__}:FakeRecipe",
        files=f"{__name__}:_fake_files",
    )
    monkeypatch.setitem(EXTRA_TARGETS, extra.name, extra)
    config = write_config(tmp_path / "recipes.toml", "\n[fake_image_text]\nbase = 20.0\n")
    run = RunRequest(
        **{
            **request.__dict__,
            "out_dir": tmp_path / "out",
            "tasks": ("pawsx", "tatoeba", "fake_image_text"),
            "seeds": 2,
            "config": config,
        }
    )
    summary = run_xtreme(run)
    assert summary.ran == (
        "tiny-xlmr0 pawsx seed 1",
        "tiny-xlmr0 pawsx seed 2",
        "tiny-xlmr0 tatoeba",
        "tiny-xlmr0 fake_image_text seed 1",
        "tiny-xlmr0 fake_image_text seed 2",
    )
    (row,) = summary.grid["splits"]["dev"]["rows"]
    assert row["tasks"]["pawsx"]["n"] == 2 and row["tasks"]["pawsx"]["std"] is not None
    (test_row,) = summary.grid["splits"]["test"]["rows"]
    fake = test_row["tasks"]["fake_image_text"]
    # seed s: languages 20 + s and 20 + 2 s, mean 20 + 1.5 s; over seeds 1 and 2: 22.25
    assert fake["mean"] == pytest.approx(22.25) and fake["std"] == pytest.approx(1.5 / 2**0.5)
    assert test_row["tasks"]["tatoeba"] is None  # XTREME's own Tatoeba files hold no gold
    assert test_row["groups"] == {} and test_row["all_task"] is None
    unit = tmp_path / "out" / "units" / "tiny-xlmr0" / "fake_image_text" / "seed-2"
    assert json.loads((unit / "called.json").read_text()) == {"seed": 2, "base": 20.0}
    assert not (unit / "runner").exists()  # the runner's folder goes once the unit is recorded
    markdown = (tmp_path / "out" / "grid.md").read_text()
    assert "| checkpoint | pawsx | tatoeba | fake_image_text |" in markdown
    assert "22.25 ± 1.06" in markdown


def _invoke(*args: str):
    return CliRunner().invoke(app, ["xtreme", "run", *args])


def test_bad_inputs_are_one_line_and_exit_2(subset_run, tmp_path: Path) -> None:
    request, _ = subset_run
    checkpoint, data = str(request.checkpoints[0]), str(request.data_dir)
    cases = [
        ((checkpoint, "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o")), "none"),
        ((checkpoint, "--data-dir", data, "--out", checkpoint), "is an input"),
        (
            (checkpoint, "--data-dir", data, "--out", str(request.data_dir / "x")),
            "inside the input",
        ),
        ((checkpoint, "--data-dir", data, "--out", str(tmp_path / "o"), "--tasks", "nope"), "nope"),
        ((data, "--data-dir", data, "--out", str(tmp_path / "o")), "config.json"),
    ]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases.append(((checkpoint, "--data-dir", data, "--out", str(foreign)), "not an earlier"))
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[xnli]\nlearning_rte = 1e-5\n")
    cases.append(
        (
            (
                checkpoint,
                "--data-dir",
                data,
                "--out",
                str(tmp_path / "o"),
                "--config",
                str(bad_config),
            ),
            "xnli.learning_rte",
        )
    )
    for args, expected in cases:
        result = _invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (foreign / "notes.txt").read_text() == "mine" and not (tmp_path / "o").exists()


def test_missing_training_data_is_refused_before_any_work(subset_run, tmp_path: Path) -> None:
    request, _ = subset_run
    data = tmp_path / "data"
    shutil.copytree(request.data_dir, data)
    (data / "udpos" / "train-en.tsv").unlink()
    with pytest.raises(InputError, match="udpos/train-en.tsv: not found"):
        run_xtreme(RunRequest(**{**request.__dict__, "data_dir": data, "out_dir": tmp_path / "o"}))
    assert not (tmp_path / "o").exists()
