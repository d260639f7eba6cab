"""Planted-pair BUCC and Tatoeba data with embeddings whose right answer is known."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class PlantedSplit:
    gold: set[tuple[str, str]]
    src_ids: list[str]
    tgt_ids: list[str]
    src_emb: np.ndarray
    tgt_emb: np.ndarray


def write_planted_split(
    data_dir: Path,
    emb_dir: Path | None,
    split: str,
    *,
    lang: str = "de",
    n_pairs: int = 40,
    n_src_noise: int = 30,
    n_tgt_noise: int = 25,
    dim: int = 32,
    noise: float = 0.25,
    seed: int = 0,
    duplicate_src: bool = False,
    write_gold: bool = True,
) -> PlantedSplit:
    """Write ``DIR/bucc2018/{lang}-en.{split}.{lang,en,gold}`` and, with ``emb_dir``, the mirrored
    ``.npy`` files. The first ``n_pairs`` rows of each side are translations (target = source +
    ``noise``); the rest are unrelated. Rows are shuffled so row order does not reveal pairs.

    With ``duplicate_src``, the last source line repeats the text (and embedding) of the first
    gold source under a new id: BUCC scoring must then drop that text, losing one gold pair.
    """
    rng = np.random.default_rng(seed)
    base = unit_rows(rng.standard_normal((n_pairs, dim)))
    src = np.concatenate([base, unit_rows(rng.standard_normal((n_src_noise, dim)))])
    tgt = np.concatenate(
        [
            unit_rows(base + noise * rng.standard_normal((n_pairs, dim)) / np.sqrt(dim)),
            unit_rows(rng.standard_normal((n_tgt_noise, dim))),
        ]
    )
    src_texts = [f"{lang} satz {split} {i}" for i in range(len(src))]
    tgt_texts = [f"en sentence {split} {i}" for i in range(len(tgt))]
    src_order, tgt_order = rng.permutation(len(src)), rng.permutation(len(tgt))
    src, tgt = src[src_order], tgt[tgt_order]
    src_texts = [src_texts[i] for i in src_order]
    tgt_texts = [tgt_texts[i] for i in tgt_order]
    src_ids = [f"{lang}-{split}-{i:06d}" for i in range(len(src))]
    tgt_ids = [f"en-{split}-{i:06d}" for i in range(len(tgt))]
    src_row_of = {int(original): row for row, original in enumerate(src_order)}
    tgt_row_of = {int(original): row for row, original in enumerate(tgt_order)}
    gold = {(src_ids[src_row_of[i]], tgt_ids[tgt_row_of[i]]) for i in range(n_pairs)}
    if duplicate_src:
        first = src_row_of[0]
        src = np.concatenate([src, src[first : first + 1]])
        src_texts.append(src_texts[first])
        src_ids.append(f"{lang}-{split}-dup")

    folder = data_dir / "bucc2018"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{lang}-en.{split}"
    _write_tsv(folder / f"{stem}.{lang}", src_ids, src_texts)
    _write_tsv(folder / f"{stem}.en", tgt_ids, tgt_texts)
    if write_gold:
        (folder / f"{stem}.gold").write_text(
            "".join(f"{s}\t{t}\n" for s, t in sorted(gold)), encoding="utf-8"
        )
    if emb_dir is not None:
        (emb_dir / "bucc2018").mkdir(parents=True, exist_ok=True)
        np.save(emb_dir / "bucc2018" / f"{stem}.{lang}.npy", src)
        np.save(emb_dir / "bucc2018" / f"{stem}.en.npy", tgt.astype(np.float16))
    return PlantedSplit(gold, src_ids, tgt_ids, src, tgt)


def split_files(root: Path, split: str = "test", lang: str = "de") -> dict[str, Path]:
    """The files ``write_planted_split(root / "data", root / "emb", split)`` wrote: ``src``,
    ``tgt``, ``gold`` and their embeddings ``src_emb``, ``tgt_emb``."""
    data, emb, stem = root / "data" / "bucc2018", root / "emb" / "bucc2018", f"{lang}-en.{split}"
    return {
        "src": data / f"{stem}.{lang}",
        "tgt": data / f"{stem}.en",
        "gold": data / f"{stem}.gold",
        "src_emb": emb / f"{stem}.{lang}.npy",
        "tgt_emb": emb / f"{stem}.en.npy",
    }


def file_args(root: Path, split: str = "test") -> list[str]:
    """``mine``'s ``--src-file/--tgt-file/--src-emb/--tgt-emb`` for a planted split."""
    files = split_files(root, split)
    return [
        "--src-file", str(files["src"]), "--tgt-file", str(files["tgt"]),
        "--src-emb", str(files["src_emb"]), "--tgt-emb", str(files["tgt_emb"]),
    ]  # fmt: skip


def _write_tsv(path: Path, ids: list[str], texts: list[str]) -> None:
    path.write_text(
        "".join(f"{i}\t{t}\n" for i, t in zip(ids, texts, strict=True)), encoding="utf-8"
    )


def write_planted_tatoeba(
    data_dir: Path, emb_dir: Path, lang: str, *, n: int = 50, dim: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``DIR/tatoeba/tatoeba.{lang}-eng.{lang,eng}`` with embeddings where every pair is nearest."""
    rng = np.random.default_rng(seed)
    xx = unit_rows(rng.standard_normal((n, dim)))
    en = unit_rows(xx + 0.1 * rng.standard_normal((n, dim)) / np.sqrt(dim))
    folder = data_dir / "tatoeba"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"tatoeba.{lang}-eng.{lang}").write_text(
        "".join(f"{lang} {i}\n" for i in range(n)), encoding="utf-8"
    )
    (folder / f"tatoeba.{lang}-eng.eng").write_text(
        "".join(f"eng {i}\n" for i in range(n)), encoding="utf-8"
    )
    (emb_dir / "tatoeba").mkdir(parents=True, exist_ok=True)
    np.save(emb_dir / "tatoeba" / f"tatoeba.{lang}-eng.{lang}.npy", xx)
    np.save(emb_dir / "tatoeba" / f"tatoeba.{lang}-eng.eng.npy", en)
    return xx, en
