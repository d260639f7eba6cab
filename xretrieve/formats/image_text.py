"""The image-text layout, one for training and evaluation (the trainer's ``image_text`` task,
``xretrieve evaluate --tasks image-text`` and the zero-shot image-text target task of
``xretrieve.xtreme.image_text``)::

    DIR/image_text/
      images.npy                   float (n_images, dim): one feature vector per image, frozen
                                   (any scale: rows are L2-normalised when read)
      image_ids.txt                n_images lines: the id of each row of images.npy
      captions.{lang}.{split}.jsonl   the captions of one language and split (train, dev, test)
      captions.{lang}.jsonl        a language's captions without a split (``evaluate`` reads it
                                   as that language's test set)

A caption line is ``{"image_id": "...", "caption": "..."}`` (an integer id is read as its
decimal string), or IGLUE's release form ``{"id": "...", "sentences": ["...", ...],
"img_path": "..."}`` (``datasets/xFlickrCO/annotations/{lang}/test.jsonl``, Flickr30K's
``{train,valid}_ann.jsonl``): one caption per sentence. An image may have several captions,
and need not have any; one ``images.npy`` may hold the images of every split.

Readers only parse and check: every problem is an ``InputError`` naming the file and line (a
missing ``image_ids.txt``, a duplicate or empty id, rows and ids of different counts, NaN or
infinite features, a caption naming an id that is not in the gallery, a malformed line).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.readers import iter_jsonl, open_matrix
from xretrieve.formats.corpus import read_lines

IMAGE_TEXT_DIR = "image_text"
FEATURES_NAME = "images.npy"
IDS_NAME = "image_ids.txt"
CAPTION_FIELD = "caption"
IMAGE_ID_FIELD = "image_id"
DOCS = "docs/multimodal.md"


@dataclass(frozen=True)
class ImageGallery:
    """The images: ``features[i]`` (float32, L2-normalised) is the image ``ids[i]`` names;
    ``row_of`` maps an id to its row."""

    path: Path
    ids: tuple[str, ...]
    features: np.ndarray  # (n_images, dim) float32
    row_of: Mapping[str, int]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Captions:
    """The captions of one file in file order: ``texts[i]`` describes the image in gallery row
    ``images[i]`` and comes from line ``lines[i]`` (IGLUE lines give several captions)."""

    path: Path
    texts: tuple[str, ...]
    images: np.ndarray  # (n_captions,) int64 gallery rows
    lines: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)


def image_text_dir(data_dir: Path | str) -> Path:
    """``DIR/image_text``."""
    return Path(data_dir) / IMAGE_TEXT_DIR


def captions_path(data_dir: Path | str, lang: str, split: str | None = None) -> Path:
    """``DIR/image_text/captions.{lang}.{split}.jsonl`` (``captions.{lang}.jsonl`` without a
    split)."""
    name = f"captions.{lang}.jsonl" if split is None else f"captions.{lang}.{split}.jsonl"
    return image_text_dir(data_dir) / name


def caption_languages(data_dir: Path | str, split: str | None = None) -> list[str]:
    """Languages (sorted) with a caption file of ``split`` (None: the unsplit files)."""
    folder = image_text_dir(data_dir)
    if not folder.is_dir():
        return []
    suffix = r"\.jsonl" if split is None else rf"\.{re.escape(split)}\.jsonl"
    pattern = re.compile(rf"captions\.([^.]+){suffix}")
    return sorted({m.group(1) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))})


def ids_path(features: Path | str) -> Path:
    """The ``image_ids.txt`` that names the rows of the features file ``features``."""
    return Path(features).with_name(IDS_NAME)


def read_image_ids(features: Path | str) -> tuple[str, ...]:
    """The ids of ``image_ids.txt`` beside ``features`` (one per line, stripped); ``InputError``
    for a missing file, an empty or a duplicate id."""
    path = ids_path(features)
    if not path.is_file():
        raise InputError(
            path,
            f"image ids not found: the image-text layout keeps {IDS_NAME} (one id per row of "
            f"{Path(features).name}) beside the features, and captions name their image by "
            f"'{IMAGE_ID_FIELD}' (see {DOCS}; for captions that give row numbers, list "
            "0..N-1 there, one per line)",
        )
    ids = tuple(line.strip() for line in read_lines(path))
    seen: set[str] = set()
    for number, image_id in enumerate(ids, start=1):
        if not image_id:
            raise InputError(path, "empty image id", number)
        if image_id in seen:
            raise InputError(path, f"duplicate image id {image_id!r}", number)
        seen.add(image_id)
    return ids


def read_image_gallery(features: Path | str) -> ImageGallery:
    """The features file ``features`` (``images.npy``) and the ids beside it; rows are
    L2-normalised float32 (an all-zero row stays zero). ``InputError`` when either is missing
    or malformed, when they differ in length, or for NaN or infinite values."""
    path = Path(features)
    ids = read_image_ids(path)
    array = open_matrix(path, kind="image features")
    if array.shape[1] == 0:
        raise InputError(
            path, f"expected image features of one dimension at least, found shape {array.shape}"
        )
    if array.shape[0] != len(ids):
        raise InputError(
            path, f"has {array.shape[0]} rows but {ids_path(path)} lists {len(ids)} ids"
        )
    matrix = np.asarray(array, dtype=np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise InputError(path, f"row {int(np.argmax(bad))} holds NaN or infinite values")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return ImageGallery(
        path=path,
        ids=ids,
        features=matrix / norms,
        row_of={image_id: row for row, image_id in enumerate(ids)},
    )


def read_captions(
    path: Path | str,
    row_of: Mapping[str, int],
    *,
    caption_field: str = CAPTION_FIELD,
    image_field: str = IMAGE_ID_FIELD,
    limit: int | None = None,
) -> Captions:
    """The captions of a JSON Lines file (either record form of the module docstring; blank
    lines skipped), each resolved to its gallery row through ``row_of`` (``ImageGallery.row_of``
    or ids -> rows). ``caption_field`` and ``image_field`` rename the first form's fields;
    ``limit`` stops after that many captions. ``InputError`` names the line of a bad record or
    an id not in the gallery, and the file when it holds no caption."""
    path = Path(path)
    texts: list[str] = []
    rows: list[int] = []
    lines: list[int] = []
    for number, record in iter_jsonl(path):
        for image_id, caption in _line_captions(path, number, record, caption_field, image_field):
            row = row_of.get(image_id)
            if row is None:
                raise InputError(
                    path, f"unknown image id {image_id!r}: not in the gallery's {IDS_NAME}", number
                )
            texts.append(caption)
            rows.append(row)
            lines.append(number)
            if limit is not None and len(texts) >= limit:
                break
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise InputError(path, "no captions in file")
    return Captions(
        path=path,
        texts=tuple(texts),
        images=np.asarray(rows, dtype=np.int64),
        lines=tuple(lines),
    )


def _line_captions(
    path: Path, number: int, record: dict[str, Any], caption_field: str, image_field: str
) -> list[tuple[str, str]]:
    """``(image id, caption)`` pairs of one line's record."""
    if caption_field in record:
        caption = record[caption_field]
        if not isinstance(caption, str):
            raise InputError(path, f"field '{caption_field}' must be a string", number)
        if image_field not in record:
            raise InputError(path, _missing_image_id(record, image_field), number)
        return [(_image_id(record[image_field], image_field, path, number), caption)]
    sentences = record.get("sentences")
    if sentences is not None and "id" in record:
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise InputError(path, "field 'sentences' must be a list of strings", number)
        image_id = _image_id(record["id"], "id", path, number)
        return [(image_id, sentence) for sentence in sentences]
    raise InputError(
        path,
        f'expected {{"{image_field}": "...", "{caption_field}": "..."}} or IGLUE\'s '
        '{"id": "...", "sentences": [...]}',
        number,
    )


def _missing_image_id(record: Mapping[str, Any], image_field: str) -> str:
    if image_field == IMAGE_ID_FIELD and "image" in record:
        return (
            f"missing field '{IMAGE_ID_FIELD}': 'image' (a row number of the features) is the "
            f"old trainer layout; captions name their image by '{IMAGE_ID_FIELD}', a line of "
            f"{IDS_NAME} (see {DOCS}; to keep such files, list 0..N-1 in {IDS_NAME} and set "
            'fields = { image_id = "image" })'
        )
    return f"missing field '{image_field}'"


def _image_id(value: Any, field: str, path: Path, number: int) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(path, f"field '{field}' must be a string or an integer", number)
    return str(value)
