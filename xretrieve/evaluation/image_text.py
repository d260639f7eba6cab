"""Multilingual caption <-> image retrieval against precomputed image features, in the style of
xFlickr&CO (IGLUE) and Multi30K, on the image-text layout of ``xretrieve.formats.image_text``
(``DIR/image_text/``: ``images.npy``, ``image_ids.txt``, ``captions.{lang}[.{split}].jsonl``).

A caption file is scored against its own images: the gallery is the images its captions name
(as IGLUE scores xFlickr&CO's test set and the Flickr30K/COCO test splits are scored), so one
``images.npy`` may hold the images of every split. Scores (percent): text->image Recall@k counts
a caption as a hit when its image is among the k gallery images most similar to it;
image->text Recall@k counts a gallery image as a hit when any of its captions is among the k
captions most similar to it. Captions must be embedded in the image space (a checkpoint trained
with the image-text task exports its projection head for that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.formats import Corpus
from xretrieve.formats.image_text import (
    FEATURES_NAME,
    Captions,
    ImageGallery,
    captions_path,
    ids_path,
    image_text_dir,
    read_captions,
    read_image_gallery,
)
from xretrieve.knn.exact import knn, l2_normalize

RECALL_KS = (1, 5, 10)
TEST_SPLIT = "test"


@dataclass(frozen=True)
class ImageTextData:
    """Captions of one language and their gallery (the images they name):
    ``caption_images[i]`` is the row in ``image_features`` of caption ``i``'s image."""

    lang: str
    captions: Corpus
    caption_images: np.ndarray  # (n_captions,) int64
    image_ids: tuple[str, ...]
    image_features: np.ndarray  # (n_gallery, dim) float32, L2-normalised


@dataclass(frozen=True)
class ImageTextResult:
    """Recall@k in percent for each k of ``ks``, both directions, and the query counts;
    ``ranking[i]`` the gallery rows nearest to caption ``i``, best first (``max(ks)`` of them,
    or the whole gallery when it is smaller)."""

    ks: tuple[int, ...]
    text_to_image: tuple[float, ...]
    image_to_text: tuple[float, ...]
    n_captions: int
    n_images: int
    ranking: np.ndarray | None = field(default=None, compare=False, repr=False)


def image_text_paths(data_dir: Path | str, lang: str) -> tuple[Path, ...]:
    """Every file ``evaluate`` may read for ``lang``: ``images.npy``, ``image_ids.txt`` and
    both places of its test captions (``captions.{lang}.jsonl``, ``captions.{lang}.test.jsonl``;
    one of them exists, see ``evaluation_captions``)."""
    features = image_text_dir(data_dir) / FEATURES_NAME
    return (
        features,
        ids_path(features),
        captions_path(data_dir, lang),
        captions_path(data_dir, lang, TEST_SPLIT),
    )


def evaluation_captions(data_dir: Path | str, lang: str) -> Path:
    """The captions ``evaluate`` scores for ``lang``: ``captions.{lang}.test.jsonl`` or the
    unsplit ``captions.{lang}.jsonl`` (the latter's path when neither exists); ``InputError``
    when both exist (two test sets)."""
    split = captions_path(data_dir, lang, TEST_SPLIT)
    unsplit = captions_path(data_dir, lang)
    if split.is_file() and unsplit.is_file():
        raise InputError(
            unsplit,
            f"two test sets for '{lang}' ({unsplit.name} and {split.name}): keep one",
        )
    return split if split.is_file() else unsplit


def gallery_of(lang: str, gallery: ImageGallery, captions: Captions) -> ImageTextData:
    """The captions with the gallery restricted to the images they name (rows renumbered in
    gallery order)."""
    rows, caption_images = np.unique(captions.images, return_inverse=True)
    return ImageTextData(
        lang=lang,
        captions=Corpus(path=captions.path, texts=captions.texts, ids=None),
        caption_images=caption_images.astype(np.int64).reshape(-1),
        image_ids=tuple(gallery.ids[row] for row in rows),
        image_features=gallery.features[rows],
    )


def read_image_text(data_dir: Path | str, lang: str, split: str | None = None) -> ImageTextData:
    """The captions of ``lang`` (of ``split``; None: those ``evaluate`` scores, see
    ``evaluation_captions``) and their gallery; ``InputError`` for a missing or malformed file
    or a caption naming an unknown image id."""
    gallery = read_image_gallery(image_text_dir(data_dir) / FEATURES_NAME)
    if split is None:
        path = evaluation_captions(data_dir, lang)
    else:
        path = captions_path(data_dir, lang, split)
    return gallery_of(lang, gallery, read_captions(path, gallery.row_of))


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
        ranking=t2i_ids,
    )
