"""The image-text target task ``xflickrco`` in ``xtreme run``: a text-only and a multimodal
intermediate checkpoint (trained a step on the image-text task by the trainer) on one table with
XTREME tasks. Its column holds per language exactly what ``run_image_text_task`` returns for the
unit, with resource groups and the difference to the baseline; the XTREME aggregate is the same
with or without it; its units resume, keep their fine-tuned checkpoint, rerun when its data
changes (and only then); its data is checked before any work; it runs only when named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from xtreme_fixtures import IMAGE_TEST_FILLERS, write_config, write_image_text, write_xtreme

from xretrieve.cli.app import app
from xretrieve.core.errors import InputError
from xretrieve.xtreme import TASK_NAMES
from xretrieve.xtreme.image_text import ImageTextRecipe, run_image_text_task
from xretrieve.xtreme.run import RunRequest, run_xtreme

TASKS = ("pawsx", "bucc2018", "tatoeba", "xflickrco")
XTREME_ONLY = TASKS[:-1]
# Two epochs at a small learning rate: scores between 0 and 100 that differ between checkpoints.
XFLICKRCO = """
[xflickrco]
epochs = 2
batch_size = 8
learning_rate = 1e-3
head_learning_rate = 1e-2
warmup_ratio = 0.0
max_length = 16
"""
RECIPE = ImageTextRecipe(
    epochs=2, batch_size=8, learning_rate=1e-3, head_learning_rate=1e-2, warmup_ratio=0.0,
    max_length=16,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny XTREME download (labelled test splits) with ``image_text/`` beside its folders."""
    return write_image_text(write_xtreme(tmp_path_factory.mktemp("xfc") / "data"))


@pytest.fixture(scope="module")
def multimodal_checkpoint(tmp_path_factory, tiny_xlmr_checkpoint, data) -> Path:
    """The tiny XLM-R after one step of multimodal intermediate training (the trainer's
    image_text task): it carries a projection head."""
    from xretrieve.trainer import train
    from xretrieve.trainer.config import EvalConfig, OptimConfig, TaskConfig, TrainConfig
    from xretrieve.trainer.task_type import TaskType

    captions = data / "image_text" / "captions.en.train.jsonl"
    task = TaskConfig(
        name="captions",
        type=TaskType.IMAGE_TEXT,
        train_files=(captions,),
        preset="image_text",
        image_features=data / "image_text" / "images.npy",
        batch_size=8,
    )
    config = TrainConfig(
        tasks=(task,),
        base=tiny_xlmr_checkpoint,
        output_dir=tmp_path_factory.mktemp("multimodal") / "run",
        max_length=16,
        optim=OptimConfig(max_steps=1, batch_size=8, learning_rate=1e-3),
        evaluation=EvalConfig(eval_every=1, keep_best=False, keep_last=1),
    )
    checkpoint = train(config, device="cpu").last_checkpoint
    assert checkpoint is not None and (checkpoint / "projection.safetensors").is_file()
    return checkpoint


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, tiny_xlmr_checkpoint, multimodal_checkpoint, data):
    base = tmp_path_factory.mktemp("grid")
    request = RunRequest(
        checkpoints=(multimodal_checkpoint,),
        baseline=tiny_xlmr_checkpoint,
        data_dir=data,
        out_dir=base / "out",
        tasks=TASKS,
        config=write_config(base / "recipes.toml", XFLICKRCO),
        device="cpu",
    )
    return request, run_xtreme(request)


def _unit(request: RunRequest, folder: str) -> Path:
    return request.out_dir / "units" / folder / "xflickrco" / "seed-1"


def test_xflickrco_is_a_column_with_the_runners_scores_per_language_and_group(
    grid_run, tmp_path: Path
) -> None:
    request, summary = grid_run
    assert "tiny-xlmr0 xflickrco seed 1" in summary.ran
    grid = summary.grid
    assert grid["tasks"] == list(TASKS) and grid["extra_tasks"] == ["xflickrco"]
    base, multimodal = grid["splits"]["test"]["rows"]
    assert base["baseline"] and multimodal["checkpoint"] == multimodal_checkpoint_name(request)
    means = {}
    for row, checkpoint in ((base, request.baseline), (multimodal, request.checkpoints[0])):
        # What the task's own function returns for this unit (checkpoint, data, recipe, seed 1).
        outcome = run_image_text_task(
            checkpoint, request.data_dir, tmp_path / row["checkpoint"], seed=1, recipe=RECIPE,
            device="cpu",
        )  # fmt: skip
        assert set(outcome.scores) == set(IMAGE_TEST_FILLERS)
        languages = row["languages"]["xflickrco"]
        for lang, values in outcome.scores.items():
            assert languages[lang]["mean"] == pytest.approx(values["r1_mean"])
            assert languages[lang]["n"] == 1
        for group, values in outcome.groups.items():
            stat = row["resource_groups"]["xflickrco"][group]
            assert stat["mean"] == pytest.approx(values["r1_mean"])
        mean = float(np.mean([values["r1_mean"] for values in outcome.scores.values()]))
        assert row["tasks"]["xflickrco"]["mean"] == pytest.approx(mean)
        means[row["checkpoint"]] = mean
        # The unit's record holds every metric of every language, as the function returned it.
        record = json.loads((_unit(request, row["checkpoint"]) / "unit.json").read_text())
        stored = record["scores"]["test"]["languages"]
        assert set(stored) == set(outcome.scores)
        for lang, values in outcome.scores.items():
            assert stored[lang] == pytest.approx(dict(values))
        assert record["outcome"]["dev_score"] == pytest.approx(outcome.dev_score)
        # Selected on English dev: the dev split holds English only, scored as the test split.
        assert set(outcome.dev_scores) == {"en"}
        assert record["scores"]["dev"]["languages"]["en"] == pytest.approx(
            dict(outcome.dev_scores["en"])
        )
        dev_row = next(
            r for r in grid["splits"]["dev"]["rows"] if r["checkpoint"] == row["checkpoint"]
        )
        assert list(dev_row["languages"]["xflickrco"]) == ["en"]
        assert dev_row["tasks"]["xflickrco"]["mean"] == pytest.approx(
            outcome.dev_scores["en"]["r1_mean"]
        )
        # Its predictions, as the function wrote them, under the unit's predictions/.
        predictions = _unit(request, row["checkpoint"]) / "predictions"
        for split, lang in [("dev", "en"), *(("test", lang) for lang in outcome.scores)]:
            name = f"{split}/test-{lang}.tsv"
            ours = (predictions / split / "xflickrco" / f"test-{lang}.tsv").read_text()
            assert ours == (tmp_path / row["checkpoint"] / "predictions" / name).read_text()
    assert 0 < min(means.values()) and max(means.values()) < 100  # informative scores
    assert multimodal["delta"]["tasks"]["xflickrco"] == pytest.approx(
        means[multimodal["checkpoint"]] - means[base["checkpoint"]]
    )
    delta = multimodal["delta"]["languages"]["xflickrco"]["sw"]
    assert delta == pytest.approx(
        multimodal["languages"]["xflickrco"]["sw"]["mean"]
        - base["languages"]["xflickrco"]["sw"]["mean"]
    )
    markdown = (request.out_dir / "grid.md").read_text()
    assert "| checkpoint | pawsx | bucc2018 | tatoeba | retrieval | xflickrco |" in markdown
    assert "- extra task xflickrco: the mean of `r1_mean` over the languages scored" in markdown
    assert "### test: xflickrco per language" in markdown
    assert "| checkpoint | de (high) | ta (medium) | sw (low) |" in markdown
    plots = request.out_dir / "plots"
    for name in ("test_delta.png", "test_languages_xflickrco.png", "dev_languages_pawsx.png"):
        assert (plots / name).stat().st_size > 0


def multimodal_checkpoint_name(request: RunRequest) -> str:
    return Path(request.checkpoints[0]).name


def test_the_unit_keeps_its_fine_tuned_checkpoint_and_drops_the_runners_folder(
    grid_run,
) -> None:
    request, _ = grid_run
    unit = _unit(request, multimodal_checkpoint_name(request))
    record = json.loads((unit / "unit.json").read_text())
    assert record["kind"] == "external" and record["model"] == "model"
    assert record["recipe"] == {**RECIPE.to_json()}
    assert record["outcome"]["fine_tuned"].startswith("train/checkpoint-")
    assert (unit / "model" / "projection.safetensors").is_file()
    assert not (unit / "model" / "trainer_state.pt").exists()
    assert not (unit / "runner").exists()
    # No XTREME submission or label folder for an extra task.
    assert not list(request.out_dir.glob("submissions/*/seed-1/test/xflickrco"))
    assert not (request.out_dir / "labels" / "test" / "xflickrco").exists()


def _copy(request: RunRequest, tmp_path: Path, *names: str) -> RunRequest:
    """The run with copies of ``names`` (``data``, ``out``) under ``tmp_path``."""
    changes = {}
    for name in names:
        source = request.data_dir if name == "data" else request.out_dir
        shutil.copytree(source, tmp_path / name)
        changes["data_dir" if name == "data" else "out_dir"] = tmp_path / name
    return RunRequest(**{**request.__dict__, **changes})


def test_the_xtreme_aggregate_is_the_same_without_it_and_a_rerun_keeps_it(
    grid_run, tmp_path: Path
) -> None:
    request, summary = grid_run
    copy = _copy(request, tmp_path, "out")
    without = run_xtreme(RunRequest(**{**copy.__dict__, "tasks": XTREME_ONLY}))
    assert without.ran == () and len(without.kept) == 2 * 3
    for split in ("test", "dev"):
        for full, xtreme in zip(
            summary.grid["splits"][split]["rows"],
            without.grid["splits"][split]["rows"],
            strict=True,
        ):
            for key in ("groups", "all_task", "resource_mean"):
                assert full[key] == xtreme[key], (split, key)
            assert ("retrieval" in full["groups"]) == (split == "test")  # no Tatoeba dev
            assert full["tasks"]["xflickrco"] is not None  # English dev, test languages
            assert {n: v for n, v in full["tasks"].items() if n != "xflickrco"} == xtreme["tasks"]
    # Through the command line: --tasks names it; every unit is kept, xflickrco's included.
    args = ["xtreme", "run", str(request.checkpoints[0]), "--baseline", str(request.baseline)]
    args += ["--data-dir", str(request.data_dir), "--out", str(copy.out_dir), "--config"]
    args += [str(request.config), "--tasks", ",".join(TASKS), "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    grid = json.loads(result.stdout)
    assert grid["splits"] == json.loads(json.dumps(summary.grid["splits"]))
    again = run_xtreme(copy)
    assert again.ran == () and "tiny-xlmr0 xflickrco seed 1" in again.kept


def test_changed_image_text_data_reruns_only_xflickrco(grid_run, tmp_path: Path) -> None:
    request, _ = grid_run
    copy = _copy(request, tmp_path, "data", "out")
    # A file the task does not read (captions without a split) changes nothing.
    (copy.data_dir / "image_text" / "captions.fr.jsonl").write_text(
        '{"image_id": "flickr0", "caption": "le chat"}\n'
    )
    assert run_xtreme(copy).ran == ()
    with open(copy.data_dir / "image_text" / "captions.de.test.jsonl", "a") as handle:
        handle.write('{"image_id": "flickr8", "caption": "der"}\n')
    rerun = run_xtreme(copy)
    assert rerun.ran == (
        "tiny-xlmr0 xflickrco seed 1",
        f"{multimodal_checkpoint_name(request)} xflickrco seed 1",
    )


def test_an_interrupted_xflickrco_unit_resumes_its_training(grid_run, tmp_path: Path) -> None:
    request, summary = grid_run
    run = RunRequest(
        **{
            **request.__dict__,
            "checkpoints": (request.baseline,),
            "baseline": None,
            "tasks": ("xflickrco",),
            "out_dir": tmp_path / "out",
            "keep_models": False,
        }
    )

    def stop_in_training(stage: str, done: int, total: int | None) -> None:
        if stage.endswith(": train") and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_xtreme(run, progress=stop_in_training)
    unit = _unit(run, "tiny-xlmr0")
    assert list((unit / "runner" / "train").glob("checkpoint-*/trainer_state.pt"))
    assert not (unit / "unit.json").exists() and not list(tmp_path.rglob("*.tmp"))
    resumed = run_xtreme(run)
    assert resumed.ran == ("tiny-xlmr0 xflickrco seed 1",)
    record = json.loads((unit / "unit.json").read_text())
    expected = json.loads((_unit(request, "tiny-xlmr0") / "unit.json").read_text())
    assert set(record["scores"]["dev"]["languages"]) == {"en"}
    for lang, values in expected["scores"]["test"]["languages"].items():
        assert record["scores"]["test"]["languages"][lang] == pytest.approx(values)
    assert record["model"] is None and not (unit / "model").exists()
    assert not (unit / "runner").exists()
    (row,) = resumed.grid["splits"]["test"]["rows"]
    assert row["tasks"]["xflickrco"] == summary.grid["splits"]["test"]["rows"][0]["tasks"][
        "xflickrco"
    ]  # fmt: skip
    assert row["groups"] == {} and row["all_task"] is None and row["resource_mean"] == {}


def test_xflickrco_data_is_checked_before_any_work(grid_run, tmp_path: Path) -> None:
    request, _ = grid_run
    copy = _copy(request, tmp_path, "data")
    captions = copy.data_dir / "image_text" / "captions.sw.test.jsonl"
    with open(captions, "a") as handle:
        handle.write('{"image_id": "flickr99", "caption": "dog"}\n')
    out = tmp_path / "out"
    with pytest.raises(InputError, match="unknown image id 'flickr99'") as info:
        run_xtreme(RunRequest(**{**copy.__dict__, "out_dir": out}))
    assert info.value.path == captions and info.value.line == 9
    assert not out.exists()
    shutil.rmtree(copy.data_dir / "image_text")
    with pytest.raises(InputError, match="no image-text data"):
        run_xtreme(RunRequest(**{**copy.__dict__, "out_dir": out}))
    assert not out.exists()


def test_it_runs_only_when_named() -> None:
    from xretrieve.xtreme.run import _targets

    assert [target.name for target in _targets(None)] == list(TASK_NAMES)
    assert [target.name for target in _targets(["xflickrco", "xnli"])] == ["xnli", "xflickrco"]
