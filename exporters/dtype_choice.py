"""``--dtype auto`` on the CPU: keep the int8 graph only if, in EVERY language of a held-out
parallel set, its Tatoeba-style top-1 retrieval accuracy stays within ``MAX_ACCURACY_DROP``
points of the float32 graph's. The worst language decides, not the mean: quantisation costs
languages with fewer resources and their own scripts more, and a mean over mostly
high-resource languages hides that (multilingual-e5-small, per-batch int8: the mean over ten
languages rose 0.2 points while Basque lost 2.5).

The held-out set (``data/heldout_parallel.tsv``) was written by hand for xretrieve: 60 English
sentences with German, French, Spanish, Russian and Chinese translations, and Hebrew, Georgian,
Basque, Irish and Swahili ones, with near-duplicates (two cats / three cats, the morning /
evening train) so that small embedding errors can swap neighbours. It is no part of any
benchmark xretrieve evaluates on (BUCC, Tatoeba)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.settings import Device, Dtype

logger = logging.getLogger(__name__)

HELDOUT_PATH = Path(__file__).parent / "data" / "heldout_parallel.tsv"
# int8 may lose at most this many accuracy points (percent) against float32, in any language.
MAX_ACCURACY_DROP = 1.0
_BATCH = 64


@dataclass(frozen=True)
class ParallelSet:
    """Aligned sentence pairs per language: ``pairs[lang] = (xx_texts, en_texts)``, row i of one
    translating row i of the other; ``sha256`` of the file they came from."""

    pairs: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]
    sha256: str
    path: str


@dataclass(frozen=True)
class DtypeChoice:
    """Outcome of the held-out comparison. Accuracies are percentages: top-1 cosine retrieval
    accuracy averaged over both directions (en -> xx, xx -> en) per language in
    ``*_by_language``, and their mean over languages. ``worst_language`` is the language where
    int8 loses most against fp32, ``worst_drop`` that loss in points (negative: int8 gained
    everywhere). ``chosen`` is INT8 when ``worst_drop <= max_drop``, else FP32."""

    chosen: Dtype
    fp32_accuracy: float
    int8_accuracy: float
    fp32_by_language: Mapping[str, float]
    int8_by_language: Mapping[str, float]
    worst_language: str
    worst_drop: float
    max_drop: float
    pairs: int
    heldout_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": Dtype.AUTO.value,
            "chosen": self.chosen.value,
            "rule": f"int8 if its held-out top-1 accuracy is within {self.max_drop} point of "
            "fp32 in every language",
            "fp32_accuracy": round(self.fp32_accuracy, 3),
            "int8_accuracy": round(self.int8_accuracy, 3),
            "worst_language": self.worst_language,
            "worst_drop": round(self.worst_drop, 3),
            "max_drop": self.max_drop,
            "fp32_by_language": {k: round(v, 3) for k, v in self.fp32_by_language.items()},
            "int8_by_language": {k: round(v, 3) for k, v in self.int8_by_language.items()},
            "pairs": self.pairs,
            "heldout_sha256": self.heldout_sha256,
        }


def read_parallel_set(path: Path = HELDOUT_PATH) -> ParallelSet:
    """Read ``language<TAB>English<TAB>translation`` lines (``#`` lines are comments).
    ``InputError`` naming the file and line for anything else."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read the held-out parallel set: {error}") from None
    pairs: dict[str, tuple[list[str], list[str]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not all(field.strip() for field in fields):
            raise InputError(path, "expected language<TAB>English<TAB>translation", line=number)
        lang, english, translation = fields
        xx_texts, en_texts = pairs.setdefault(lang, ([], []))
        xx_texts.append(translation)
        en_texts.append(english)
    if not pairs:
        raise InputError(path, "the held-out parallel set holds no pairs")
    return ParallelSet(
        pairs={lang: (tuple(xx), tuple(en)) for lang, (xx, en) in pairs.items()},
        sha256=hashlib.sha256(raw).hexdigest(),
        path=str(path),
    )


def embed_texts(
    session: Any, tokenizer: Any, texts: Sequence[str], text_prefix: str, max_length: int
) -> np.ndarray:
    """``(n, dim)`` float32 L2-normalised ``embeddings`` of ``texts`` from an ONNX Runtime
    session of an export graph, in input order, batches of 64."""
    rows = []
    for start in range(0, len(texts), _BATCH):
        encoded = tokenizer(
            [text_prefix + text for text in texts[start : start + _BATCH]],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        feeds = {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
        rows.append(session.run(["embeddings"], feeds)[0])
    emb = np.concatenate(rows).astype(np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def top1_accuracy(xx_emb: np.ndarray, en_emb: np.ndarray) -> float:
    """Mean of both directions' top-1 cosine retrieval accuracy (percent) over aligned rows of
    L2-normalised ``(n, d)`` arrays; a tie goes to the lower row (``np.argmax``), as in
    ``xretrieve.evaluation.tatoeba`` with exact search."""
    sims = xx_emb.astype(np.float64) @ en_emb.astype(np.float64).T
    rows = np.arange(sims.shape[0])
    xx2en = np.mean(np.argmax(sims, axis=1) == rows)
    en2xx = np.mean(np.argmax(sims, axis=0) == rows)
    return float(100 * (xx2en + en2xx) / 2)


def heldout_accuracy(
    session: Any, tokenizer: Any, parallel: ParallelSet, text_prefix: str, max_length: int
) -> dict[str, float]:
    """``{language: top1_accuracy}`` of one graph on every language of ``parallel``."""
    return {
        lang: top1_accuracy(
            embed_texts(session, tokenizer, xx, text_prefix, max_length),
            embed_texts(session, tokenizer, en, text_prefix, max_length),
        )
        for lang, (xx, en) in parallel.pairs.items()
    }


def decide(
    fp32_by_language: Mapping[str, float],
    int8_by_language: Mapping[str, float],
    parallel: ParallelSet,
    max_drop: float = MAX_ACCURACY_DROP,
) -> DtypeChoice:
    """Pure rule of ``choose_cpu_dtype``: INT8 when in every language its accuracy is at least
    fp32's minus ``max_drop`` points (a language where int8 is more accurate qualifies; the
    mean over languages does not count), else FP32. Both mappings name the same languages."""
    if set(fp32_by_language) != set(int8_by_language) or not fp32_by_language:
        raise ValueError("fp32 and int8 accuracies must cover the same, non-empty languages")
    drops = {lang: fp32_by_language[lang] - int8_by_language[lang] for lang in fp32_by_language}
    worst = max(drops, key=drops.__getitem__)
    # A hair of tolerance: percentages are not exact in binary floating point.
    keep_int8 = drops[worst] <= max_drop + 1e-9
    return DtypeChoice(
        chosen=Dtype.INT8 if keep_int8 else Dtype.FP32,
        fp32_accuracy=float(np.mean(list(fp32_by_language.values()))),
        int8_accuracy=float(np.mean(list(int8_by_language.values()))),
        fp32_by_language=dict(fp32_by_language),
        int8_by_language=dict(int8_by_language),
        max_drop=max_drop,
        pairs=sum(len(xx) for xx, _ in parallel.pairs.values()),
        heldout_sha256=parallel.sha256,
        worst_language=worst,
        worst_drop=float(drops[worst]),
    )


def choose_cpu_dtype(
    fp32_path: Path,
    int8_path: Path,
    tokenizer: Any,
    *,
    text_prefix: str,
    max_length: int,
    parallel: ParallelSet | None = None,
) -> DtypeChoice:
    """Run the float32 and int8 graphs (CPU execution provider) on the held-out parallel set
    and apply ``decide``; logs both accuracies."""
    from exporters.validate import open_session

    parallel = parallel or read_parallel_set()
    accuracies = []
    for path in (fp32_path, int8_path):
        session = open_session(Path(path), Device.CPU)
        accuracies.append(heldout_accuracy(session, tokenizer, parallel, text_prefix, max_length))
    choice = decide(accuracies[0], accuracies[1], parallel, MAX_ACCURACY_DROP)
    logger.info(
        "dtype auto: held-out top-1 accuracy fp32 %.2f, int8 %.2f (mean), int8 loses most in "
        "%s: %.2f points -> %s",
        choice.fp32_accuracy,
        choice.int8_accuracy,
        choice.worst_language,
        choice.worst_drop,
        choice.chosen.value,
    )
    return choice
