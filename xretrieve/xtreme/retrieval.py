"""The retrieval target tasks of phase 3, BUCC 2018 and Tatoeba, through the toolkit's own
encoder, kNN and margin mining, with XTREME's protocol: no fine-tuning; each sentence is the
mean (``RetrievalRecipe.pooling``) of one hidden state's token vectors (``xtreme_layer``:
hidden state 14 of 24-layer models, as XTREME's ``run_tatoeba.sh`` and jiant's XTREME config).

- BUCC: margin-based mining (ratio margin, k = 4, LASER/XTREME's ``mine_bitext``); the
  threshold is tuned on the dev split (BUCC's sample, with gold) and applied to the test split
  and to the dev split itself. Predictions: the extracted ``src_id<TAB>en_id`` pairs.
- Tatoeba: each sentence of the language queries the English side (cosine, top 1); the
  prediction is the index of the English sentence found in XTREME's sorted English file (what
  XTREME's submission holds). With LASER's aligned files (or the Hugging Face export) the gold
  is written in the same index space, so the scorer compares like with like.

Gold files are written by ``write_retrieval_gold`` from the data; scoring is ``xtreme score``'s."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.settings import Device
from xretrieve.formats.corpus import Corpus
from xretrieve.mining.margin import MinedPairs
from xretrieve.xtreme.data import Split, read_bucc, read_tatoeba_sides
from xretrieve.xtreme.outputs import write_lines
from xretrieve.xtreme.recipes import RetrievalRecipe, xtreme_layer
from xretrieve.xtreme.tasks import XtremeTask
from xretrieve.xtreme.units import TaskFiles

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """How sentences were embedded: hidden-state ``layer`` of ``num_layers``, ``pooling``."""

    layer: int
    num_layers: int
    pooling: str

    def describe(self) -> str:
        return (
            f"{self.pooling} pooling of hidden state {self.layer} of {self.num_layers} layers "
            "(0 = the embeddings)"
        )

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "description": self.describe()}


def retrieval_protocol(checkpoint: Path, recipe: RetrievalRecipe) -> Protocol:
    """The layer and pooling a checkpoint is embedded with: the recipe's layer, else XTREME's
    choice for the checkpoint's depth."""
    from exporters import resolve_layers
    from exporters.checkpoint import num_hidden_layers, read_checkpoint_config

    depth = num_hidden_layers(read_checkpoint_config(checkpoint))
    wanted = recipe.layer if recipe.layer is not None else xtreme_layer(depth)
    (layer,) = resolve_layers((wanted,), depth)
    return Protocol(layer=layer, num_layers=depth, pooling=recipe.pooling.value)


class _Embedder:
    """One loaded encoder of the checkpoint's chosen layer; each distinct text encoded once."""

    def __init__(
        self, checkpoint: Path, recipe: RetrievalRecipe, protocol: Protocol, device: Device
    ):
        from xretrieve.encoding import load_encoder

        self.encoder = load_encoder(
            checkpoint,
            backend=recipe.backend,
            device=device,
            batch_tokens=recipe.batch_tokens,
            layers=(protocol.layer,),
            pooling=protocol.pooling,
        )

    def __call__(self, corpus: Corpus) -> np.ndarray:
        from xretrieve.mining.sources import EncoderSource

        return EncoderSource(self.encoder).embed(corpus)  # type: ignore[arg-type]


def predict_retrieval(
    checkpoint: Path,
    task: XtremeTask,
    files: TaskFiles,
    recipe: RetrievalRecipe,
    predictions_root: Path,
    *,
    device: Device = Device.AUTO,
    progress: ProgressCallback = no_progress,
) -> tuple[Protocol, dict[str, Any]]:
    """Embed, search and write ``predictions_root/{dev,test}/TASK/test-LANG.tsv`` for every
    language of ``files``; returns the protocol and per-language details (BUCC thresholds)."""
    protocol = retrieval_protocol(checkpoint, recipe)
    embed = _Embedder(checkpoint, recipe, protocol, device)
    details: dict[str, Any] = {}
    languages = files.languages(Split.TEST)
    for done, lang in enumerate(languages):
        progress(f"{task.name} {protocol.pooling}@{protocol.layer}", done, len(languages))
        if task.name == "bucc2018":
            details[lang] = _bucc(task, files, lang, embed, predictions_root, device)
        else:
            details[lang] = _tatoeba(task, files, lang, embed, predictions_root, device)
    progress(f"{task.name} {protocol.pooling}@{protocol.layer}", len(languages), len(languages))
    return protocol, details


def _bucc(
    task: XtremeTask,
    files: TaskFiles,
    lang: str,
    embed: _Embedder,
    predictions_root: Path,
    device: Device,
) -> dict[str, Any]:
    from xretrieve.mining.gold import apply_threshold, tune_threshold
    from xretrieve.mining.margin import MiningConfig

    config = MiningConfig(device=device.value)
    dev = read_bucc(files.splits[Split.DEV][lang])
    dev_src, dev_tgt = embed(dev.src), embed(dev.tgt)
    threshold, tune_f1 = tune_threshold(dev, dev_src, dev_tgt, config)
    extracted: dict[str, int] = {}
    for split in (Split.DEV, Split.TEST):
        data = dev if split is Split.DEV else read_bucc(files.splits[Split.TEST][lang])
        src_emb, tgt_emb = (
            (dev_src, dev_tgt) if split is Split.DEV else (embed(data.src), embed(data.tgt))
        )
        scoring = apply_threshold(data, src_emb, tgt_emb, threshold, tune_f1, config)
        pairs = bucc_pairs(scoring.candidates, data.src, data.tgt, threshold)
        write_lines(task.path(predictions_root / split.value, lang), pairs)
        extracted[split.value] = len(pairs)
    return {"threshold": threshold, "tune_f1": tune_f1, "extracted": extracted}


def bucc_pairs(candidates: MinedPairs, src: Corpus, tgt: Corpus, threshold: float) -> list[str]:
    """``src_id<TAB>tgt_id`` of the candidates scoring at least ``threshold`` (each pair once,
    best first), as XTREME's ``bucc_extract`` writes them."""
    assert src.ids is not None and tgt.ids is not None
    kept = candidates.above(threshold)
    lines = [
        f"{src.ids[s]}\t{tgt.ids[t]}"
        for s, t in zip(kept.src_index.tolist(), kept.tgt_index.tolist(), strict=True)
    ]
    return list(dict.fromkeys(lines))


def _tatoeba(
    task: XtremeTask,
    files: TaskFiles,
    lang: str,
    embed: _Embedder,
    predictions_root: Path,
    device: Device,
) -> dict[str, Any]:
    from xretrieve.knn.exact import knn

    sides = read_tatoeba_sides(files.splits[Split.TEST][lang])
    _, ids = knn(embed(sides.src), embed(sides.eng), 1, device=device.value, normalize=True)
    found = ids[:, 0]
    if sides.aligned:  # rows of the aligned English side -> lines of XTREME's sorted file
        found = sorted_positions(sides.eng.texts)[found]
    write_lines(task.path(predictions_root / Split.TEST.value, lang), (str(int(i)) for i in found))
    return {"sentences": len(sides.src), "aligned": sides.aligned}


def sorted_positions(english: Sequence[str]) -> np.ndarray:
    """``(n,)`` int64: the line of each English sentence in XTREME's sorted English file
    (``tatoeba_preprocess``: lines stripped, stably sorted by text)."""
    order = sorted(range(len(english)), key=lambda i: english[i].strip())
    positions = np.empty(len(english), dtype=np.int64)
    positions[np.asarray(order, dtype=np.int64)] = np.arange(len(english))
    return positions


def write_retrieval_gold(task: XtremeTask, files: TaskFiles, labels_root: Path) -> None:
    """BUCC: the gold pairs of every split that has them; Tatoeba (aligned files only): each
    sentence's English line in XTREME's sorted file."""
    for split in (Split.DEV, Split.TEST):
        for lang, task_file in files.splits.get(split, {}).items():
            if not task_file.has_labels:
                continue
            path = task.path(labels_root / split.value, lang)
            if task.name == "bucc2018":
                gold = read_bucc(task_file).gold or frozenset()
                write_lines(path, (f"{s}\t{t}" for s, t in sorted(gold)))
            else:
                sides = read_tatoeba_sides(task_file)
                write_lines(path, (str(int(i)) for i in sorted_positions(sides.eng.texts)))
