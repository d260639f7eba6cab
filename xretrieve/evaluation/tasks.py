"""The evaluation tasks: each is data (name, metrics, where its files are) plus a scorer that
calls the library's own scoring code, so that numbers equal those of ``xretrieve bucc`` and
``xretrieve tatoeba``. mteb-style: a task loads one language, says which corpora to embed, and
scores embeddings; it never encodes, caches or writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.evaluation.bootstrap import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    bootstrap_means,
    f1_percent,
    f1_samples,
    unit_seed,
)
from xretrieve.evaluation.image_text import (
    RECALL_KS,
    TEST_SPLIT,
    ImageTextData,
    image_text_paths,
    image_text_recall,
    read_image_text,
)
from xretrieve.formats import BuccSplit, Corpus, read_bucc_split, read_tatoeba
from xretrieve.formats.bucc import bucc_paths
from xretrieve.formats.image_text import caption_languages
from xretrieve.formats.tatoeba import tatoeba_paths
from xretrieve.mining.margin import MiningConfig


@dataclass(frozen=True)
class ScoringSettings:
    """How units are scored: bootstrap resamples and seed, kNN device, BUCC mining and splits."""

    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    device: str = "auto"
    mining: MiningConfig = field(default_factory=MiningConfig)
    bucc_tune_split: str = "training"
    bucc_eval_split: str = "test"

    def to_json(self) -> dict[str, Any]:
        """The settings that change a unit's numbers (the kNN device does not), as stored in
        ``run.json``."""
        return {
            "resamples": self.resamples,
            "seed": self.seed,
            "mining": {
                "k": self.mining.k,
                "margin": self.mining.margin.name,
                "mode": self.mining.mode.name,
            },
            "bucc_tune_split": self.bucc_tune_split,
            "bucc_eval_split": self.bucc_eval_split,
        }

    def fingerprint(self) -> str:
        """12 hex digits of sha256 over ``to_json()``: stored with every result row, so that a
        row scored under other settings is never taken for a finished unit."""
        payload = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:12]


@dataclass(frozen=True)
class Measurement:
    """One metric of one unit; ``samples`` ``(resamples,)`` are its bootstrap replicates, or
    None where no interval is computed."""

    metric: str
    value: float
    n: int | None
    samples: np.ndarray | None = None


class EvaluationTask(Protocol):
    """``name`` as on the command line; ``primary_metric`` is what leaderboards rank by;
    ``uses_projection``: scored on the projected view of a checkpoint that has an image-text
    projection head (caption vectors in the image-feature space)."""

    name: str
    primary_metric: str
    metrics: frozenset[str]
    label: str
    uses_projection: bool

    def files(self, data_dir: Path, lang: str, settings: ScoringSettings) -> list[Path]:
        """Every file ``load`` reads for ``lang`` (whether or not it exists)."""
        ...

    def languages(self, data_dir: Path, settings: ScoringSettings) -> list[str]:
        """Languages with at least one file of this task under ``data_dir`` (sorted)."""
        ...

    def load(self, data_dir: Path, lang: str, settings: ScoringSettings) -> Any:
        """The unit's data; ``InputError`` when a file is missing or malformed."""
        ...

    def corpora(self, data: Any) -> list[Corpus]:
        """The corpora to embed, in the order ``score`` expects their embeddings."""
        ...

    def score(
        self, data: Any, embeddings: Sequence[np.ndarray], settings: ScoringSettings
    ) -> list[Measurement]:
        """Every metric of ``metrics`` for one unit."""
        ...


def _discover(directory: Path, pattern: str) -> list[str]:
    regex = re.compile(pattern)
    if not directory.is_dir():
        return []
    found = {
        match.group(1) for path in directory.iterdir() if (match := regex.fullmatch(path.name))
    }
    return sorted(found)


@dataclass(frozen=True)
class BuccData:
    tune: BuccSplit
    evaluation: BuccSplit


class BuccTask:
    """BUCC 2018: the threshold is tuned on ``bucc_tune_split`` and applied to
    ``bucc_eval_split`` (``xretrieve.evaluation.bucc``). F1's interval: Poisson bootstrap over the
    evaluation split's source sentences (``bootstrap.f1_samples``)."""

    name = "bucc"
    label = "BUCC F1"
    primary_metric = "f1"
    metrics = frozenset({"f1", "precision", "recall", "threshold", "tune_f1"})
    uses_projection = False

    def files(self, data_dir: Path, lang: str, settings: ScoringSettings) -> list[Path]:
        splits = dict.fromkeys((settings.bucc_tune_split, settings.bucc_eval_split))
        return [path for split in splits for path in bucc_paths(data_dir, lang, split)]

    def languages(self, data_dir: Path, settings: ScoringSettings) -> list[str]:
        splits = "|".join(
            re.escape(split) for split in (settings.bucc_tune_split, settings.bucc_eval_split)
        )
        return _discover(Path(data_dir) / "bucc2018", rf"([^.]+)-en\.(?:{splits})\.[^.]+")

    def load(self, data_dir: Path, lang: str, settings: ScoringSettings) -> BuccData:
        tune = read_bucc_split(data_dir, lang, settings.bucc_tune_split)
        evaluation = read_bucc_split(data_dir, lang, settings.bucc_eval_split)
        if evaluation.gold is None:
            _, _, gold_path = _bucc_gold_path(data_dir, lang, settings.bucc_eval_split)
            raise InputError(gold_path, "gold file not found: scoring needs the evaluation gold")
        if tune.gold is None:
            _, _, gold_path = _bucc_gold_path(data_dir, lang, settings.bucc_tune_split)
            raise InputError(gold_path, "gold file not found: threshold tuning needs it")
        return BuccData(tune, evaluation)

    def corpora(self, data: BuccData) -> list[Corpus]:
        return [data.tune.src, data.tune.tgt, data.evaluation.src, data.evaluation.tgt]

    def score(
        self, data: BuccData, embeddings: Sequence[np.ndarray], settings: ScoringSettings
    ) -> list[Measurement]:
        from xretrieve.mining.gold import apply_threshold, tune_threshold
        from xretrieve.mining.margin import at_or_above

        tune_src_emb, tune_tgt_emb, eval_src_emb, eval_tgt_emb = embeddings
        threshold, tune_f1 = tune_threshold(data.tune, tune_src_emb, tune_tgt_emb, settings.mining)
        # One mining of the evaluation split serves the point estimate and the bootstrap.
        scoring = apply_threshold(
            data.evaluation, eval_src_emb, eval_tgt_emb, threshold, tune_f1, settings.mining
        )
        evaluation, result, candidates = data.evaluation, scoring.result, scoring.candidates
        gold = evaluation.gold or frozenset()
        correct = scoring.correct
        threshold, f1 = result.threshold, result.f1
        precision, recall, tune_f1 = result.precision, result.recall, result.tune_f1
        rows, tp, fp, fn = bucc_item_counts(
            candidates.src_index,
            at_or_above(candidates.score, threshold),
            correct,
            gold,
            evaluation.src,
        )
        seed = unit_seed(settings.seed, self.name, evaluation.lang)
        samples = f1_samples(rows, tp, fp, fn, settings.resamples, seed)
        if abs(f1_percent(tp.sum(), fp.sum(), fn.sum()) - f1) > 1e-6:
            raise AssertionError("bootstrap counts disagree with the point F1")
        n_gold = len(gold)
        return [
            Measurement("f1", f1, n_gold, samples),
            Measurement("precision", precision, n_gold),
            Measurement("recall", recall, n_gold),
            Measurement("threshold", threshold, None),
            Measurement("tune_f1", tune_f1, len(data.tune.gold or ())),
        ]


def _bucc_gold_path(data_dir: Path, lang: str, split: str) -> tuple[Path, Path, Path]:
    from xretrieve.formats import bucc_paths

    return bucc_paths(data_dir, lang, split)


def bucc_item_counts(
    candidate_src_rows: np.ndarray,
    extracted: np.ndarray,
    correct: np.ndarray,
    gold: frozenset[tuple[str, str]],
    src: Corpus,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per source sentence: ``(rows, tp, fp, fn)``, each ``(m,)`` int64, for the ``m`` source
    rows with any extracted candidate or gold pair. An extracted candidate counts as TP or FP at
    its source row, a gold pair that no extracted candidate found as FN at its source row."""
    n = len(src)
    extracted = np.asarray(extracted, dtype=bool)
    correct = np.asarray(correct, dtype=bool)
    tp = np.bincount(candidate_src_rows[extracted & correct], minlength=n)
    fp = np.bincount(candidate_src_rows[extracted & ~correct], minlength=n)
    row_of = {sentence_id: row for row, sentence_id in enumerate(src.ids or ())}
    gold_rows = np.fromiter((row_of[s] for s, _ in gold), dtype=np.int64, count=len(gold))
    fn = np.bincount(gold_rows, minlength=n) - tp
    rows = np.flatnonzero((tp > 0) | (fp > 0) | (fn > 0))
    return rows, tp[rows], fp[rows], fn[rows]


class TatoebaTask:
    """Tatoeba (XTREME layout): top-1 accuracy both ways (``xretrieve.evaluation.tatoeba``); intervals from
    resampling the query pairs. The primary metric is ``accuracy_en2xx``, XTREME's direction."""

    name = "tatoeba"
    label = "Tatoeba accuracy"
    primary_metric = "accuracy_en2xx"
    metrics = frozenset({"accuracy_en2xx", "accuracy_xx2en"})
    uses_projection = False

    def files(self, data_dir: Path, lang: str, settings: ScoringSettings) -> list[Path]:
        return list(tatoeba_paths(data_dir, lang))

    def languages(self, data_dir: Path, settings: ScoringSettings) -> list[str]:
        return _discover(Path(data_dir) / "tatoeba", r"tatoeba\.([^.]+)-eng\.[^.]+")

    def load(self, data_dir: Path, lang: str, settings: ScoringSettings) -> Any:
        return read_tatoeba(data_dir, lang)

    def corpora(self, data: Any) -> list[Corpus]:
        return [data.src, data.eng]

    def score(
        self, data: Any, embeddings: Sequence[np.ndarray], settings: ScoringSettings
    ) -> list[Measurement]:
        from xretrieve.evaluation.tatoeba import score_tatoeba
        from xretrieve.knn.exact import knn_both_ways

        xx_emb, en_emb = embeddings
        result = score_tatoeba(xx_emb, en_emb, device=settings.device)
        # Per-pair hits for the bootstrap, with the search score_tatoeba runs.
        _, xx2en_ids, _, en2xx_ids = knn_both_ways(
            xx_emb, en_emb, 1, device=settings.device, normalize=True
        )
        rows = np.arange(result.n)
        hits = {
            "accuracy_en2xx": (en2xx_ids[:, 0] == rows, result.accuracy_en2xx),
            "accuracy_xx2en": (xx2en_ids[:, 0] == rows, result.accuracy_xx2en),
        }
        seed = unit_seed(settings.seed, self.name, data.lang)
        measurements = []
        for metric, (hit, value) in hits.items():
            if abs(100.0 * float(hit.mean()) - value) > 1e-6:
                raise AssertionError(f"per-pair hits disagree with score_tatoeba's {metric}")
            samples = 100.0 * bootstrap_means(hit, settings.resamples, seed)
            measurements.append(Measurement(metric, value, result.n, samples))
        return measurements


class ImageTextRetrievalTask:
    """Caption <-> image retrieval (``xretrieve.evaluation.image_text``): Recall@1/5/10 both
    ways; the primary metric is ``r1_mean``, the mean of both directions' Recall@1."""

    name = "image-text"
    # Scored on the projected view of checkpoints that carry an image-text projection head.
    uses_projection = True
    label = "Image-text R@1"
    primary_metric = "r1_mean"
    metrics = frozenset(
        {f"t2i_r{k}" for k in RECALL_KS} | {f"i2t_r{k}" for k in RECALL_KS} | {"r1_mean"}
    )

    def files(self, data_dir: Path, lang: str, settings: ScoringSettings) -> list[Path]:
        return list(image_text_paths(data_dir, lang))

    def languages(self, data_dir: Path, settings: ScoringSettings) -> list[str]:
        return sorted(
            set(caption_languages(data_dir)) | set(caption_languages(data_dir, TEST_SPLIT))
        )

    def load(self, data_dir: Path, lang: str, settings: ScoringSettings) -> ImageTextData:
        return read_image_text(data_dir, lang)

    def corpora(self, data: ImageTextData) -> list[Corpus]:
        return [data.captions]

    def score(
        self, data: ImageTextData, embeddings: Sequence[np.ndarray], settings: ScoringSettings
    ) -> list[Measurement]:
        (caption_emb,) = embeddings
        if caption_emb.shape[1] != data.image_features.shape[1]:
            raise InputError(
                data.captions.path,
                f"caption embeddings have dimension {caption_emb.shape[1]} but the image "
                f"features {data.image_features.shape[1]}: evaluate a checkpoint whose export "
                "includes its image-text projection head",
            )
        result = image_text_recall(
            caption_emb,
            data.image_features,
            data.caption_images,
            RECALL_KS,
            device=settings.device,
        )
        out = [
            Measurement(f"t2i_r{k}", value, result.n_captions)
            for k, value in zip(result.ks, result.text_to_image, strict=True)
        ]
        out += [
            Measurement(f"i2t_r{k}", value, result.n_images)
            for k, value in zip(result.ks, result.image_to_text, strict=True)
        ]
        r1 = (result.text_to_image[0] + result.image_to_text[0]) / 2.0
        out.append(Measurement("r1_mean", r1, result.n_captions))
        return out


TASKS: dict[str, EvaluationTask] = {
    task.name: task for task in (BuccTask(), TatoebaTask(), ImageTextRetrievalTask())
}


def get_task(name: str) -> EvaluationTask:
    """The task named ``name``; ``InputError`` listing the known ones otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(None, f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None
