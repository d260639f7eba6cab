"""Zero-shot cross-lingual image-text retrieval (xFlickr&CO style): fine-tune a tiny checkpoint
on English captions, select on English dev, score every language's test captions; reported per
language and resource group; reruns resume; wrong layouts are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from xtreme_fixtures import IMAGE_NOUNS, IMAGE_TEST_FILLERS, write_captions, write_image_text

from xretrieve.core.errors import InputError
from xretrieve.xtreme.image_text import (
    METRICS,
    ImageTextRecipe,
    group_scores,
    run_image_text_task,
)

RECIPE = ImageTextRecipe(
    epochs=10, batch_size=8, learning_rate=3e-3, head_learning_rate=1e-2, warmup_ratio=0.0,
    max_length=16,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_planted_alignment_scores_r1_100_in_every_language_and_group(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    from xretrieve.encoding import load_encoder
    from xretrieve.evaluation.image_text import image_text_recall, read_image_text

    data = write_image_text(tmp_path / "data")
    out = tmp_path / "out"
    outcome = run_image_text_task(
        tiny_xlmr_checkpoint, data, out, seed=0, recipe=RECIPE, device="cpu"
    )
    assert set(outcome.scores) == set(IMAGE_TEST_FILLERS)
    for lang, values in outcome.scores.items():
        assert tuple(values) == METRICS
        assert values["r1_t2i"] == 100.0 and values["r1_i2t"] == 100.0, (lang, values)
        assert values["r1_mean"] <= values["r5_mean"] <= values["r10_mean"] == 100.0
        assert outcome.counts[lang] == (len(IMAGE_NOUNS), len(IMAGE_NOUNS))
    assert list(outcome.groups) == ["high", "medium", "low"]
    assert outcome.groups["low"] == outcome.scores["sw"]

    # Selected on English dev: the best score of the trainer's records, and its checkpoint.
    records = [json.loads(line) for line in (out / "train/metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: r["score"])
    assert outcome.dev_score == best["score"] == 100.0
    assert outcome.fine_tuned == out / "train" / best["checkpoint"]
    assert (outcome.fine_tuned / "projection.safetensors").is_file()

    # The same numbers as evaluate's layout and scorer on the fine-tuned checkpoint.
    encoder = load_encoder(outcome.fine_tuned, backend="torch", device="cpu", projection=True)
    pair = read_image_text(data, "de")
    expected = image_text_recall(
        encoder.encode(list(pair.captions.texts)), pair.image_features, pair.caption_images,
        device="cpu",
    )  # fmt: skip
    assert outcome.scores["de"]["r5_t2i"] == pytest.approx(expected.text_to_image[1])
    assert outcome.scores["de"]["r1_i2t"] == pytest.approx(expected.image_to_text[0])

    # The English dev captions are scored too; each caption's ranked image ids are written.
    assert outcome.dev_scores["en"]["r1_mean"] == 100.0
    assert outcome.predictions == out / "predictions"
    for split, lang in [("dev", "en"), ("test", "de"), ("test", "sw")]:
        lines = (out / "predictions" / split / f"test-{lang}.tsv").read_text().splitlines()
        assert len(lines) == len(IMAGE_NOUNS)
        for k, line in enumerate(lines):
            ranked = line.split("\t")
            # the gallery of a caption file: the images its captions name, all ranked
            assert ranked[0] == f"flickr{k}" and sorted(ranked) == sorted(
                f"flickr{i}" for i in range(len(IMAGE_NOUNS))
            )

    stored = json.loads((out / "scores.json").read_text())
    assert stored["scores"] == outcome.to_json()["scores"]
    assert stored["groups"]["high"]["r1_mean"] == 100.0
    assert stored["run"]["seed"] == 0 and stored["dev_score"] == 100.0


def test_groups_average_their_languages() -> None:
    scores = {
        "de": {m: 10.0 for m in METRICS},
        "fr": {m: 30.0 for m in METRICS},
        "sw": {m: 5.0 for m in METRICS},
        "xx": {m: 1.0 for m in METRICS},
    }
    groups = group_scores(scores)
    assert list(groups) == ["high", "low", "unknown"]
    assert groups["high"]["r5_i2t"] == 20.0 and groups["low"]["r1_mean"] == 5.0
    assert groups["unknown"]["r10_t2i"] == 1.0


def test_rerun_resumes_and_other_inputs_start_over(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    data = write_image_text(tmp_path / "data")
    out = tmp_path / "out"
    recipe = ImageTextRecipe(epochs=2, batch_size=8, learning_rate=3e-3, max_length=16)
    first = run_image_text_task(
        tiny_xlmr_checkpoint, data, out, seed=0, recipe=recipe, device="cpu"
    )
    metrics = (out / "train/metrics.jsonl").read_text()
    again = run_image_text_task(
        tiny_xlmr_checkpoint, data, out, seed=0, recipe=recipe, device="cpu"
    )
    assert (out / "train/metrics.jsonl").read_text() == metrics  # nothing trained again
    assert again.scores == first.scores and again.fine_tuned == first.fine_tuned
    run_image_text_task(tiny_xlmr_checkpoint, data, out, seed=1, recipe=recipe, device="cpu")
    redone = (out / "train/metrics.jsonl").read_text()
    assert redone != metrics and len(redone.splitlines()) == len(metrics.splitlines())
    assert json.loads((out / "scores.json").read_text())["run"]["seed"] == 1


def _break(data: Path, case: str) -> Path:
    """``data`` damaged as ``case``; returns the file the error must name."""
    base = data / "image_text"
    if case == "unsplit":
        for name in ("captions.en.train.jsonl", "captions.en.dev.jsonl"):
            (base / name).unlink()
        write_captions(base, "captions.en.jsonl", [("flickr0", "the cat")])
        return base / "captions.en.train.jsonl"
    if case == "no ids":
        (base / "image_ids.txt").unlink()
        return base / "image_ids.txt"
    if case == "row numbers":
        write_captions(base, "captions.en.train.jsonl", [{"caption": "the cat", "image": 0}])
        return base / "captions.en.train.jsonl"
    if case == "unknown id":
        write_captions(base, "captions.sw.test.jsonl", [("flickr0", "cat"), ("flickr99", "dog")])
        return base / "captions.sw.test.jsonl"
    if case == "no folder":
        (data / "image_text").rename(data / "images")
        return data / "image_text"
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message", "line"),
    [
        ("unsplit", "found captions without a split: en", None),
        ("no ids", "image ids not found", None),
        ("row numbers", "old trainer layout", 1),
        ("unknown id", "unknown image id 'flickr99'", 2),
        ("no folder", "no image-text data", None),
    ],
)
def test_wrong_layouts_are_refused_before_any_work(
    tiny_xlmr_checkpoint, tmp_path: Path, case: str, message: str, line: int | None
) -> None:
    data = write_image_text(tmp_path / "data")
    named = _break(data, case)
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        run_image_text_task(tiny_xlmr_checkpoint, data, out, seed=0, recipe=RECIPE, device="cpu")
    assert info.value.path == named and info.value.line == line
    assert message in str(info.value)
    assert not out.exists()


def test_missing_languages_and_outputs_that_are_not_ours_are_refused(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    data = write_image_text(tmp_path / "data")
    with pytest.raises(InputError, match=r"no test captions for ja \(found: de, sw, ta\)"):
        run_image_text_task(
            tiny_xlmr_checkpoint, data, tmp_path / "out", seed=0, languages=["ja"], device="cpu"
        )
    with pytest.raises(InputError, match="lies inside the input directory"):
        run_image_text_task(tiny_xlmr_checkpoint, data, data / "out", seed=0, device="cpu")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not an earlier xtreme image-text output"):
        run_image_text_task(tiny_xlmr_checkpoint, data, foreign, seed=0, device="cpu")
    assert (foreign / "notes.txt").read_text() == "keep"


def test_recipe_settings_are_checked() -> None:
    from xretrieve.core.errors import ArgumentError
    from xretrieve.core.settings import Backend

    with pytest.raises(ArgumentError, match="batch_size must be a positive number, not 0"):
        ImageTextRecipe(batch_size=0)
    with pytest.raises(ArgumentError, match="learning_rate must be a number >= 0"):
        ImageTextRecipe(learning_rate=-1.0)
    with pytest.raises(ArgumentError, match="patience"):
        ImageTextRecipe(patience=0)
    assert ImageTextRecipe(backend="ort").backend is Backend.ORT
    assert ImageTextRecipe().to_json()["backend"] == "torch"
