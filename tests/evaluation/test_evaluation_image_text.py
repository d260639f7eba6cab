"""evaluate's image-text task on the one image-text layout: a caption file is scored against the
images it names (IGLUE's protocol: one images.npy may hold every split's images), and the test
split's files (captions.{lang}.test.jsonl) are found as well as the unsplit ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xretrieve.core.errors import InputError
from xretrieve.evaluation.image_text import image_text_recall, read_image_text
from xretrieve.evaluation.tasks import ImageTextRetrievalTask, ScoringSettings


def _write(data: Path, captions: dict[str, list[tuple[str, str]]]) -> None:
    base = data / "image_text"
    base.mkdir(parents=True, exist_ok=True)
    np.save(base / "images.npy", np.eye(4, dtype=np.float32))
    (base / "image_ids.txt").write_text("a\nb\nc\nd\n")
    for name, rows in captions.items():
        text = "".join(json.dumps({"image_id": i, "caption": c}) + "\n" for i, c in rows)
        (base / name).write_text(text)


def test_a_caption_file_is_scored_against_the_images_it_names(tmp_path: Path) -> None:
    _write(tmp_path, {"captions.de.test.jsonl": [("a", "x"), ("b", "y")]})
    data = read_image_text(tmp_path, "de")
    assert data.image_ids == ("a", "b") and data.image_features.shape == (2, 4)
    assert data.caption_images.tolist() == [0, 1]
    # The caption of image "a" is closest to image "c", which no test caption names (a train
    # image in the same images.npy): it is not in the test gallery, so "a" ranks first.
    captions = np.array([[0.5, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=np.float32)
    result = image_text_recall(
        captions, data.image_features, data.caption_images, (1,), device="cpu"
    )
    assert result.text_to_image == (100.0,) and result.image_to_text == (100.0,)
    assert result.n_images == 2


def test_test_split_files_are_found_and_two_test_sets_refused(tmp_path: Path) -> None:
    task = ImageTextRetrievalTask()
    settings = ScoringSettings()
    _write(
        tmp_path,
        {
            "captions.en.train.jsonl": [("c", "z")],
            "captions.de.test.jsonl": [("a", "x")],
            "captions.ja.jsonl": [("b", "y")],
        },
    )
    assert task.languages(tmp_path, settings) == ["de", "ja"]
    assert read_image_text(tmp_path, "de").captions.texts == ("x",)
    assert read_image_text(tmp_path, "ja").captions.texts == ("y",)
    assert read_image_text(tmp_path, "en", "train").captions.texts == ("z",)
    files = task.files(tmp_path, "de", settings)
    assert tmp_path / "image_text/captions.de.test.jsonl" in files
    _write(tmp_path, {"captions.de.jsonl": [("a", "x")]})
    with pytest.raises(InputError, match="two test sets for 'de'"):
        task.load(tmp_path, "de", settings)
