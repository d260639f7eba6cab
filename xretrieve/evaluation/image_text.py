"""Multilingual caption <-> image retrieval against precomputed image features, in the style of
xFlickr&CO (IGLUE) and Multi30K.

Layout (``DIR/image_text/``)::

    images.npy              float (n_images, dim): one feature vector per image (any scale;
                            L2-normalised here, so similarity is cosine)
    image_ids.txt           n_images lines: the id of each row of images.npy
    captions.{lang}.jsonl   one JSON object per line: {"image_id": "...", "caption": "..."};
                            an image may have several captions, and need not have any

Scores (percent): text->image Recall@k counts a caption as a hit when its image is among the k
images most similar to it, over the whole gallery of ``images.npy``; image->text Recall@k, over
the images with at least one caption in the language, counts an image as a hit when any of its
captions is among the k captions most similar to it. Captions must be embedded in the image
space (a checkpoint trained with the image-text task exports its projection head for that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.readers import iter_jsonl, open_matrix
from xretrieve.formats import Corpus, read_lines
from xretrieve.knn.exact import knn, l2_normalize

RECALL_KS = (1, 5, 10)


@dataclass(frozen=True)
class ImageTextData:
    """Captions of one language and the image gallery: ``caption_images[i]`` is the row in
    ``image_features`` of caption ``i``'s image."""

    lang: str
    captions: Corpus
    caption_images: np.ndarray  # (n_captions,) int64
    image_ids: tuple[str, ...]
    image_features: np.ndarray  # (n_images, dim) float32, L2-normalised


@dataclass(frozen=True)
class ImageTextResult:
    """Recall@k in percent for each k of ``ks``, both directions, and the query counts."""

    ks: tuple[int, ...]
    text_to_image: tuple[float, ...]
    image_to_text: tuple[float, ...]
    n_captions: int
    n_images: int


def image_text_paths(data_dir: Path | str, lang: str) -> tuple[Path, Path, Path]:
    """``(images.npy, image_ids.txt, captions.{lang}.jsonl)`` under ``DIR/image_text``."""
    base = Path(data_dir) / "image_text"
    return base / "images.npy", base / "image_ids.txt", base / f"captions.{lang}.jsonl"


def read_image_gallery(data_dir: Path | str) -> tuple[tuple[str, ...], np.ndarray]:
    """``(image_ids, features)``: ids of ``image_ids.txt`` and the L2-normalised float32 rows of
    ``images.npy``; ``InputError`` when missing, malformed, duplicated or of different lengths."""
    features_path, ids_path, _ = image_text_paths(data_dir, "")
    ids = tuple(line.strip() for line in read_lines(ids_path))
    seen: dict[str, int] = {}
    for number, image_id in enumerate(ids, start=1):
        if not image_id:
            raise InputError(ids_path, "empty image id", number)
        if image_id in seen:
            raise InputError(ids_path, f"duplicate image id {image_id!r}", number)
        seen[image_id] = number
    features = open_matrix(features_path, kind="image features")
    if features.shape[0] != len(ids):
        raise InputError(
            features_path, f"has {features.shape[0]} rows but {ids_path} lists {len(ids)} ids"
        )
    return ids, l2_normalize(features)


def read_image_text(data_dir: Path | str, lang: str) -> ImageTextData:
    """The gallery and the captions of ``lang``; ``InputError`` for a missing file, a line that is
    not a JSON object with string ``image_id`` and ``caption``, or an unknown image id."""
    image_ids, features = read_image_gallery(data_dir)
    _, _, captions_path = image_text_paths(data_dir, lang)
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    texts: list[str] = []
    rows: list[int] = []
    for number, record in iter_jsonl(captions_path):
        image_id, caption = record.get("image_id"), record.get("caption")
        if not isinstance(image_id, (str, int)) or not isinstance(caption, str):
            raise InputError(
                captions_path, 'expected {"image_id": "...", "caption": "..."}', number
            )
        if str(image_id) not in row_of:
            raise InputError(captions_path, f"unknown image id {image_id!r}", number)
        texts.append(caption)
        rows.append(row_of[str(image_id)])
    if not texts:
        raise InputError(captions_path, "empty file")
    return ImageTextData(
        lang=lang,
        captions=Corpus(path=captions_path, texts=tuple(texts), ids=None),
        caption_images=np.asarray(rows, dtype=np.int64),
        image_ids=image_ids,
        image_features=features,
    )


def image_text_recall(
    caption_emb: np.ndarray,
    image_emb: np.ndarray,
    caption_images: np.ndarray,
    ks: tuple[int, ...] = RECALL_KS,
    *,
    device: str = "auto",
) -> ImageTextResult:
    """Recall@k both ways (percent) of ``caption_emb`` ``(n, d)`` against ``image_emb`` ``(m, d)``
    (cosine: both are L2-normalised here); ``caption_images`` ``(n,)`` int64 gives each caption's
    image row. Ties are broken by FAISS's order (lower row first)."""
    caption_emb = l2_normalize(caption_emb)
    image_emb = l2_normalize(image_emb)
    caption_images = np.asarray(caption_images, dtype=np.int64)
    max_k = max(ks)
    _, t2i_ids = knn(caption_emb, image_emb, max_k, device=device)
    t2i_hits = t2i_ids == caption_images[:, None]  # (n, min(max_k, m))
    text_to_image = tuple(100.0 * float(t2i_hits[:, :k].any(axis=1).mean()) for k in ks)

    queried = np.unique(caption_images)
    _, i2t_ids = knn(image_emb[queried], caption_emb, max_k, device=device)
    i2t_hits = caption_images[i2t_ids] == queried[:, None]
    image_to_text = tuple(100.0 * float(i2t_hits[:, :k].any(axis=1).mean()) for k in ks)
    return ImageTextResult(
        ks=tuple(ks),
        text_to_image=text_to_image,
        image_to_text=image_to_text,
        n_captions=int(caption_emb.shape[0]),
        n_images=int(queried.shape[0]),
    )
