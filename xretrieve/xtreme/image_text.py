"""Zero-shot cross-lingual image-text retrieval, the multimodal target task of phase 3, as
xFlickr&CO is run in IGLUE (Bugliarello et al. 2022): fine-tune on English captions, select the
checkpoint on the English dev captions, then retrieve with every language's test captions.

``run_image_text_task(checkpoint, data_dir, out_dir, seed=...)`` reads the image-text layout of
``xretrieve.formats.image_text`` under ``data_dir``::

    image_text/images.npy, image_ids.txt     the gallery: every split's images, one vector each
    image_text/captions.en.train.jsonl       English training captions (IGLUE: Flickr30K's
                                             train_ann.jsonl)
    image_text/captions.en.dev.jsonl         English dev captions, for checkpoint selection
                                             (IGLUE: Flickr30K's valid_ann.jsonl)
    image_text/captions.{lang}.test.jsonl    each language's test captions (IGLUE:
                                             xFlickrCO/annotations/{lang}/test.jsonl as is)

It fine-tunes the checkpoint's encoder and its image-text projection (the trainer's
``image_text`` task: mean pooling, a linear projection onto the frozen image vectors, CLIP's
symmetric InfoNCE; the projection starts from the checkpoint's own when it has one that fits,
so a checkpoint of multimodal intermediate training keeps its head), evaluates R@1 on the
English dev captions every epoch and keeps the best checkpoint, then scores each language's
test captions (and the English dev captions) against the images they name with
``image_text_recall`` (the code of ``xretrieve evaluate --tasks image-text``), on the checkpoint's
projected view (``load_encoder(..., projection=True)``). Scores are reported per language and per
resource group (``xretrieve.evaluation.resources``, as the text tasks).

``out_dir`` holds ``image_text_run.json`` (what the run was computed from: the checkpoint's
content hash, the seed, the recipe and the data files' hashes), ``train/`` (the trainer's run),
``predictions/{dev,test}/test-LANG.tsv`` (per caption, in its file's order, the ids of the
``max(RECALL_KS)`` gallery images nearest to it, best first, tab-separated) and ``scores.json``. A rerun with the same inputs resumes the training where it stopped (Ctrl-C
and SIGTERM save a resumable checkpoint); with other inputs it starts the training over.

``xretrieve xtreme run --tasks ...,xflickrco`` runs it as the extra target task ``xflickrco``
(``xretrieve.xtreme.targets.EXTRA_TARGETS``) on ``--data-dir``'s ``image_text/``: this function
is the task's runner, ``ImageTextRecipe`` its recipe (the config file's ``[xflickrco]`` table)
and ``image_text_files`` its data locator; ``ImageTextOutcome`` is an ``ExternalOutcome``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.errors import ArgumentError, InputError
from xretrieve.core.outputs import OutputOwner, check_output_path
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.settings import Backend, Device, parse_backend, parse_device
from xretrieve.formats.image_text import (
    FEATURES_NAME,
    Captions,
    ImageGallery,
    caption_languages,
    captions_path,
    ids_path,
    image_text_dir,
    read_captions,
    read_image_gallery,
)

logger = logging.getLogger(__name__)

TASK_NAME = "xflickrco"
SOURCE_LANG = "en"
TRAIN_SPLIT, DEV_SPLIT, TEST_SPLIT = "train", "dev", "test"
RUN_FILE = "image_text_run.json"
SCORES_FILE = "scores.json"
TRAIN_DIR = "train"
PREDICTIONS_DIR = "predictions"
RECALL_KS = (1, 5, 10)
# Per language: Recall@k text->image, image->text and their mean, for k in RECALL_KS.
METRICS = tuple(f"r{k}_{side}" for k in RECALL_KS for side in ("t2i", "i2t", "mean"))
MAIN_METRIC = "r1_mean"
_FORMAT = "xretrieve xtreme image-text 1"


@dataclass(frozen=True)
class ImageTextRecipe:
    """Fine-tuning settings (xretrieve's own: IGLUE fine-tunes cross-encoders over region
    features, which have no projection head to train). ``learning_rate`` is the encoder's
    (XTREME's and jiant's 1e-5 for XLM-R large), ``head_learning_rate`` the projection's and the
    temperature's (a fresh head needs a larger one). ``evaluations_per_epoch`` English dev
    evaluations per epoch (the best is kept); ``patience`` stops after that many evaluations
    without improvement. ``backend`` and ``batch_tokens`` are the scoring encoder's
    (``load_encoder``)."""

    epochs: float = 5.0
    batch_size: int = 64
    learning_rate: float = 1e-5
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 64
    eval_batch_size: int = 128
    evaluations_per_epoch: int = 1
    patience: int | None = None
    backend: Backend = Backend.TORCH
    batch_tokens: int = 16384

    def __post_init__(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "eval_batch_size": self.eval_batch_size,
            "evaluations_per_epoch": self.evaluations_per_epoch,
            "batch_tokens": self.batch_tokens,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ArgumentError(name, f"must be a positive number, not {value!r}")
        for name in ("learning_rate", "head_learning_rate", "weight_decay", "warmup_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ArgumentError(name, f"must be a number >= 0, not {value!r}")
        if self.patience is not None and not (isinstance(self.patience, int) and self.patience > 0):
            raise ArgumentError(
                "patience", f"must be a positive integer or None, not {self.patience!r}"
            )
        object.__setattr__(self, "backend", parse_backend(self.backend))

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "backend": self.backend.value}


@dataclass(frozen=True)
class ImageTextOutcome:
    """The result of one (checkpoint, seed): ``scores[lang][metric]`` (percent; ``METRICS``:
    ``r1_t2i``, ``r1_i2t``, ``r1_mean``, ``r5_...``, ``r10_...``) for every test language,
    ``groups[group][metric]`` their mean within each resource group (``high``, ``medium``,
    ``low``, ``unknown``, in that order), ``dev_score`` the English dev R@1 (mean of both
    directions) of the selected checkpoint as the trainer evaluated it, ``fine_tuned`` that
    checkpoint, ``counts[lang]`` the test captions and images of each language; ``dev_scores``
    the ``METRICS`` of the English dev captions on the selected checkpoint (``{"en": ...}``),
    ``predictions`` the folder of the ranked image ids (``dev/`` and ``test/``, a
    ``test-LANG.tsv`` per language)."""

    scores: Mapping[str, Mapping[str, float]]
    groups: Mapping[str, Mapping[str, float]]
    dev_score: float
    fine_tuned: Path
    counts: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    dev_scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    predictions: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "task": TASK_NAME,
            "main_metric": MAIN_METRIC,
            "dev_score": self.dev_score,
            "fine_tuned": str(self.fine_tuned),
            "scores": {lang: dict(values) for lang, values in self.scores.items()},
            "dev_scores": {lang: dict(values) for lang, values in self.dev_scores.items()},
            "groups": {group: dict(values) for group, values in self.groups.items()},
            "counts": {
                lang: {"captions": n_captions, "images": n_images}
                for lang, (n_captions, n_images) in self.counts.items()
            },
        }


@dataclass(frozen=True)
class ImageTextFiles:
    """Where the task's data is (see the module docstring); ``tests`` language -> file."""

    features: Path
    train: Path
    dev: Path
    tests: Mapping[str, Path]

    def all(self) -> list[Path]:
        return [self.features, ids_path(self.features), self.train, self.dev, *self.tests.values()]


def locate_image_text(
    data_dir: Path | str, languages: Sequence[str] | None = None
) -> ImageTextFiles:
    """The task's files under ``data_dir`` (every language with a test file, or ``languages``);
    ``InputError`` naming what is missing and the layout expected."""
    data_dir = Path(data_dir)
    folder = image_text_dir(data_dir)
    expected = (
        f"the image-text layout: {folder}/{FEATURES_NAME} and image_ids.txt, "
        f"captions.{SOURCE_LANG}.{TRAIN_SPLIT}.jsonl, captions.{SOURCE_LANG}.{DEV_SPLIT}.jsonl "
        f"and captions.LANG.{TEST_SPLIT}.jsonl (docs/multimodal.md)"
    )
    if not folder.is_dir():
        raise InputError(folder, f"no image-text data: expected {expected}")
    features = folder / FEATURES_NAME
    train = captions_path(data_dir, SOURCE_LANG, TRAIN_SPLIT)
    dev = captions_path(data_dir, SOURCE_LANG, DEV_SPLIT)
    for path in (features, train, dev):  # image_ids.txt: read_image_ids says more
        if not path.is_file():
            hint = ""
            unsplit = caption_languages(data_dir)
            if path in (train, dev) and unsplit:
                hint = (
                    f" (found captions without a split: {', '.join(unsplit)}; the task needs "
                    "train, dev and test files)"
                )
            raise InputError(path, f"file not found{hint}: expected {expected}")
    found = caption_languages(data_dir, TEST_SPLIT)
    wanted = list(found if languages is None else languages)
    missing = [lang for lang in wanted if lang not in found]
    if missing:
        raise InputError(
            captions_path(data_dir, missing[0], TEST_SPLIT),
            f"no test captions for {', '.join(missing)} (found: {', '.join(found) or 'none'})",
        )
    if not wanted:
        raise InputError(
            folder, f"no test captions (captions.LANG.{TEST_SPLIT}.jsonl): expected {expected}"
        )
    tests = {lang: captions_path(data_dir, lang, TEST_SPLIT) for lang in wanted}
    return ImageTextFiles(features=features, train=train, dev=dev, tests=tests)


def _disowns(directory: Path) -> str | None:
    if not (directory / RUN_FILE).is_file():
        return f"no {RUN_FILE}"
    ours = {RUN_FILE, SCORES_FILE, TRAIN_DIR, PREDICTIONS_DIR}
    foreign = sorted(
        p.name
        for p in directory.iterdir()
        if p.name not in ours and not (p.name.startswith(".") and p.name.endswith(".tmp"))
    )
    return f"it holds {', '.join(foreign)}" if foreign else None


IMAGE_TEXT_OUTPUT = OutputOwner("xtreme image-text", _disowns)


def run_image_text_task(
    checkpoint: Path,
    data_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    recipe: ImageTextRecipe | None = None,
    device: Device | str = Device.AUTO,
    progress: ProgressCallback | None = None,
    languages: Sequence[str] | None = None,
) -> ImageTextOutcome:
    """Fine-tune ``checkpoint`` on the English captions of ``data_dir``, select on the English
    dev captions, and score every test language (``languages``: a subset) zero-shot; see the
    module docstring. Everything is read and checked before any training (``InputError``
    naming the file); ``out_dir`` goes through the shared output guard. ``progress`` sees the
    trainer's ("train", step, max_steps) and ("image-text", languages done, languages)."""
    recipe = recipe or ImageTextRecipe()
    device = parse_device(device)
    progress = progress or no_progress
    checkpoint, data_dir, out_dir = Path(checkpoint), Path(data_dir), Path(out_dir)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentError("seed", f"must be an integer, not {seed!r}")
    files = locate_image_text(data_dir, languages)
    check_output_path(
        out_dir,
        directory=True,
        option="out_dir",
        inputs=[checkpoint, data_dir],
        owner=IMAGE_TEXT_OUTPUT,
    )
    if not (checkpoint / "config.json").is_file():
        raise InputError(checkpoint, "not a Hugging Face checkpoint folder (no config.json)")
    gallery, train, dev, tests = _read(files)
    run = _run_record(checkpoint, data_dir, files, seed, recipe)
    resume = _same_run(out_dir, run)
    out_dir.mkdir(parents=True, exist_ok=True)
    from xretrieve.core.files import atomic_write

    # Scores and predictions of other inputs, or of an interrupted scoring, must not stand
    # beside this run's record; the scoring below writes them again.
    (out_dir / SCORES_FILE).unlink(missing_ok=True)
    shutil.rmtree(out_dir / PREDICTIONS_DIR, ignore_errors=True)
    with atomic_write(out_dir / RUN_FILE) as handle:
        json.dump(run, handle, indent=2)
    fine_tuned, dev_score = _fine_tune(
        checkpoint, files, len(train), out_dir / TRAIN_DIR, seed, recipe, device, progress, resume
    )
    outcome = _score(
        fine_tuned, dev_score, gallery, dev, tests, out_dir / PREDICTIONS_DIR, recipe, device,
        progress,
    )  # fmt: skip
    with atomic_write(out_dir / SCORES_FILE) as handle:
        json.dump({**outcome.to_json(), "run": run}, handle, indent=2)
    return outcome


def image_text_files(data_dir: Path | str) -> list[Path]:
    """Every file the task reads under ``data_dir`` (features, ids, English train and dev
    captions, every language's test captions), each read and checked as the task reads it:
    ``InputError`` naming the file and line otherwise. ``xtreme run`` calls it before any
    work (the task's ``DataLocator``)."""
    files = locate_image_text(data_dir)
    _read(files)
    return files.all()


def _read(
    files: ImageTextFiles,
) -> tuple[ImageGallery, Captions, Captions, dict[str, Captions]]:
    """The gallery, the English training and dev captions and each language's test captions."""
    gallery = read_image_gallery(files.features)
    train = read_captions(files.train, gallery.row_of)
    dev = read_captions(files.dev, gallery.row_of)
    tests = {lang: read_captions(path, gallery.row_of) for lang, path in files.tests.items()}
    return gallery, train, dev, tests


def _run_record(
    checkpoint: Path, data_dir: Path, files: ImageTextFiles, seed: int, recipe: ImageTextRecipe
) -> dict[str, Any]:
    """What the run is computed from: a rerun with the same record resumes the training."""
    from xretrieve.core.cache import content_hash
    from xretrieve.evaluation.fingerprint import data_fingerprint

    return {
        "format": _FORMAT,
        "checkpoint": str(checkpoint),
        "checkpoint_hash": content_hash(checkpoint),
        "seed": seed,
        "recipe": recipe.to_json(),
        "data": data_fingerprint(files.all(), data_dir),
    }


def _same_run(out_dir: Path, run: Mapping[str, Any]) -> bool:
    from xretrieve.core.readers import read_json_object

    path = out_dir / RUN_FILE
    if not path.is_file():
        return False
    try:
        earlier = read_json_object(path)
    except InputError:
        return False
    same = earlier == json.loads(json.dumps(run))
    if not same:
        logger.info("%s: inputs changed since the earlier run; training starts over", out_dir)
    return same


def _fine_tune(
    checkpoint: Path,
    files: ImageTextFiles,
    n_train: int,
    train_dir: Path,
    seed: int,
    recipe: ImageTextRecipe,
    device: Device,
    progress: ProgressCallback,
    resume: bool,
) -> tuple[Path, float]:
    """Train the trainer's ``image_text`` task; the checkpoint with the best English dev
    R@1 and that score."""
    from xretrieve.trainer.config import (
        EvalConfig,
        OptimConfig,
        TaskConfig,
        TrainConfig,
    )
    from xretrieve.trainer.loop import Trainer
    from xretrieve.trainer.task_type import TaskType

    steps_per_epoch = math.ceil(n_train / recipe.batch_size)
    task = TaskConfig(
        name=TASK_NAME,
        type=TaskType.IMAGE_TEXT,
        train_files=(files.train,),
        validation=files.dev,
        preset="image_text",
        max_length=recipe.max_length,
        batch_size=recipe.batch_size,
        image_features=files.features,
    )
    config = TrainConfig(
        tasks=(task,),
        base=checkpoint,
        output_dir=train_dir,
        seed=seed,
        max_length=recipe.max_length,
        optim=OptimConfig(
            max_steps=max(1, math.ceil(recipe.epochs * steps_per_epoch)),
            batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            head_learning_rate=recipe.head_learning_rate,
            weight_decay=recipe.weight_decay,
            warmup_ratio=recipe.warmup_ratio,
        ),
        evaluation=EvalConfig(
            eval_every=max(1, steps_per_epoch // recipe.evaluations_per_epoch),
            eval_batch_size=recipe.eval_batch_size,
            metric=f"{TASK_NAME}/recall_at_1",
            keep_best=True,
            keep_last=1,
            patience=recipe.patience,
            log_every=max(1, min(50, steps_per_epoch)),
        ),
    )
    trainer = Trainer(config, device=device.value, progress=progress)
    result = trainer.train(resume=resume, overwrite=not resume)
    best = result.best_checkpoint or result.last_checkpoint
    if best is None or result.best_score is None:
        raise InputError(files.dev, "no dev evaluation was made: nothing to select on")
    logger.info("%s: selected %s (English dev R@1 %.2f)", TASK_NAME, best, result.best_score)
    return best, float(result.best_score)


def _score(
    fine_tuned: Path,
    dev_score: float,
    gallery: ImageGallery,
    dev: Captions,
    tests: Mapping[str, Captions],
    predictions: Path,
    recipe: ImageTextRecipe,
    device: Device,
    progress: ProgressCallback,
) -> ImageTextOutcome:
    """The English dev captions and every test language against the images their captions
    name, on the projected view of ``fine_tuned``; each caption's ranked image ids under
    ``predictions/{dev,test}/test-LANG.tsv``."""
    from xretrieve.encoding import load_encoder
    from xretrieve.evaluation.image_text import gallery_of, image_text_recall
    from xretrieve.mining.sources import EncoderSource

    encoder = load_encoder(
        fine_tuned,
        backend=recipe.backend,
        device=device,
        batch_tokens=recipe.batch_tokens,
        projection=True,
    )
    source = EncoderSource(encoder)
    scores: dict[str, dict[str, float]] = {}
    dev_scores: dict[str, dict[str, float]] = {}
    counts: dict[str, tuple[int, int]] = {}
    jobs = [(DEV_SPLIT, SOURCE_LANG, dev), *((TEST_SPLIT, *item) for item in tests.items())]
    progress("image-text", 0, len(jobs))
    for done, (split, lang, captions) in enumerate(jobs, start=1):
        data = gallery_of(lang, gallery, captions)
        caption_emb = source.embed(data.captions)
        result = image_text_recall(
            caption_emb, data.image_features, data.caption_images, RECALL_KS, device=device.value
        )
        assert result.ranking is not None
        _write_ranking(predictions / split / f"test-{lang}.tsv", data.image_ids, result.ranking)
        values = recall_scores(result.text_to_image, result.image_to_text)
        if split == DEV_SPLIT:
            dev_scores[lang] = values
        else:
            scores[lang] = values
            counts[lang] = (result.n_captions, result.n_images)
        progress("image-text", done, len(jobs))
    return ImageTextOutcome(
        scores=scores,
        groups=group_scores(scores),
        dev_score=dev_score,
        fine_tuned=fine_tuned,
        counts=counts,
        dev_scores=dev_scores,
        predictions=predictions,
    )


def _write_ranking(path: Path, image_ids: Sequence[str], ranking: np.ndarray) -> None:
    """One line per caption: the ids of its nearest gallery images, best first."""
    from xretrieve.core.files import atomic_write

    with atomic_write(path) as handle:
        for rows in ranking:
            handle.write("\t".join(image_ids[row] for row in rows if row >= 0) + "\n")


def recall_scores(
    text_to_image: Sequence[float], image_to_text: Sequence[float]
) -> dict[str, float]:
    """``METRICS`` of one language from Recall@k (k in ``RECALL_KS``) of both directions."""
    scores: dict[str, float] = {}
    for k, t2i, i2t in zip(RECALL_KS, text_to_image, image_to_text, strict=True):
        scores[f"r{k}_t2i"] = float(t2i)
        scores[f"r{k}_i2t"] = float(i2t)
        scores[f"r{k}_mean"] = (float(t2i) + float(i2t)) / 2.0
    return scores


def group_scores(scores: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Each metric's mean over the languages of each resource group (``high``, ``medium``,
    ``low``, then others and ``unknown``; ISO 639-1 or 639-3 codes)."""
    from xretrieve.evaluation.resources import ordered_groups
    from xretrieve.trainer.crosslingual import language_group

    members: dict[str, list[str]] = {}
    for lang in scores:
        members.setdefault(language_group(lang), []).append(lang)
    return {
        group: {
            metric: float(np.mean([scores[lang][metric] for lang in members[group]]))
            for metric in METRICS
        }
        for group in ordered_groups(members)
    }
