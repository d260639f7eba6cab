"""The image-text layout: the gallery (images.npy + image_ids.txt) and caption files in both record
forms (ours and IGLUE's release), with errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xretrieve.core.errors import InputError
from xretrieve.formats.image_text import (
    caption_languages,
    captions_path,
    read_captions,
    read_image_gallery,
)


def _gallery(folder: Path, ids: list[str], dim: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    features = np.arange(1, len(ids) * dim + 1, dtype=np.float64).reshape(len(ids), dim)
    np.save(folder / "images.npy", features)
    (folder / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return folder / "images.npy"


def _lines(path: Path, records: list) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")
    return path


def test_gallery_rows_are_l2_normalised_float32_named_by_their_ids(tmp_path: Path) -> None:
    gallery = read_image_gallery(_gallery(tmp_path, ["a", "b"]))
    assert gallery.ids == ("a", "b") and gallery.row_of == {"a": 0, "b": 1}
    assert gallery.features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(gallery.features, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(gallery.features[0], np.array([1, 2, 3]) / np.sqrt(14), rtol=1e-6)


def test_both_record_forms_and_blank_lines(tmp_path: Path) -> None:
    gallery = read_image_gallery(_gallery(tmp_path, ["10", "11", "12"]))
    path = _lines(
        tmp_path / "captions.de.test.jsonl",
        [
            {"image_id": "11", "caption": "ein Hund"},
            "",
            {"image_id": 12, "caption": "eine Katze"},  # an integer id is its decimal string
            {"sentences": ["a", "b"], "id": "10", "img_path": "10.jpg"},  # IGLUE's release
        ],
    )
    captions = read_captions(path, gallery.row_of)
    assert captions.texts == ("ein Hund", "eine Katze", "a", "b")
    assert captions.images.tolist() == [1, 2, 0, 0]
    assert captions.lines == (1, 3, 4, 4)
    assert read_captions(path, gallery.row_of, limit=3).texts == ("ein Hund", "eine Katze", "a")


def test_field_names_can_be_overridden(tmp_path: Path) -> None:
    gallery = read_image_gallery(_gallery(tmp_path, ["0", "1"]))
    path = _lines(tmp_path / "old.jsonl", [{"text": "x", "image": 1}])
    captions = read_captions(path, gallery.row_of, caption_field="text", image_field="image")
    assert captions.images.tolist() == [1]


@pytest.mark.parametrize(
    ("records", "message", "line"),
    [
        (["{not json"], "not valid JSON", 1),
        ([[1, 2]], "JSON object", 1),
        ([{"image_id": "a", "caption": 3}], "'caption' must be a string", 1),
        ([{"image_id": "a", "caption": "x"}, {"image_id": "z", "caption": "y"}], "unknown", 2),
        ([{"image_id": True, "caption": "x"}], "string or an integer", 1),
        ([{"caption": "x", "image": 0}], "old trainer layout", 1),
        ([{"caption": "x", "img": "a"}], "missing field 'image_id'", 1),
        ([{"id": "a", "sentences": [1]}], "list of strings", 1),
        ([{"text": "x"}], 'expected {"image_id"', 1),
        (["", "  "], "no captions", None),
    ],
)
def test_bad_caption_lines_name_file_and_line(tmp_path: Path, records, message, line) -> None:
    gallery = read_image_gallery(_gallery(tmp_path, ["a"]))
    path = _lines(tmp_path / "captions.en.train.jsonl", records)
    with pytest.raises(InputError) as info:
        read_captions(path, gallery.row_of)
    assert info.value.path == path and info.value.line == line
    assert message in str(info.value)


def test_bad_galleries_are_refused_naming_the_file(tmp_path: Path) -> None:
    features = _gallery(tmp_path, ["a", "b"])
    (tmp_path / "image_ids.txt").unlink()
    with pytest.raises(InputError, match="image_ids.txt .* beside the features") as info:
        read_image_gallery(features)
    assert info.value.path == tmp_path / "image_ids.txt"
    assert "docs/multimodal.md" in str(info.value)
    (tmp_path / "image_ids.txt").write_text("a\na\n")
    with pytest.raises(InputError, match="duplicate image id 'a'") as info:
        read_image_gallery(features)
    assert info.value.line == 2
    (tmp_path / "image_ids.txt").write_text("a\nb\nc\n")
    with pytest.raises(InputError, match="has 2 rows but .* lists 3 ids"):
        read_image_gallery(features)
    (tmp_path / "image_ids.txt").write_text("a\nb\n")
    np.save(features, np.array([[1.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(InputError, match="row 0 holds NaN"):
        read_image_gallery(features)
    np.save(features, np.array([1, 2]))
    with pytest.raises(InputError, match=r"2-D \(rows, dim\) matrix"):
        read_image_gallery(features)


def test_caption_files_are_found_per_language_and_split(tmp_path: Path) -> None:
    folder = tmp_path / "image_text"
    folder.mkdir()
    for name in ("captions.en.train.jsonl", "captions.en.dev.jsonl", "captions.de.test.jsonl",
                 "captions.ja.test.jsonl", "captions.fr.jsonl", "images.npy"):  # fmt: skip
        (folder / name).write_text("")
    assert caption_languages(tmp_path, "test") == ["de", "ja"]
    assert caption_languages(tmp_path, "train") == ["en"]
    assert caption_languages(tmp_path) == ["fr"]
    assert captions_path(tmp_path, "de", "test") == folder / "captions.de.test.jsonl"
    assert captions_path(tmp_path, "fr") == folder / "captions.fr.jsonl"
