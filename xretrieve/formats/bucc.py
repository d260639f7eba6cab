"""The BUCC 2018 layout: ``DIR/bucc2018/{xx}-en.{split}.{xx|en|gold}``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xretrieve.core.errors import InputError
from xretrieve.formats.corpus import Corpus, read_bucc_corpus, read_lines


@dataclass(frozen=True)
class BuccSplit:
    """One split of one BUCC language pair: ``src`` the {xx} side, ``tgt`` the English side, and
    ``gold`` the set of ``(xx_id, en_id)`` pairs, or None when the split has no ``.gold`` file;
    ``gold_path`` where that file is or would be (None for splits not read from a directory)."""

    lang: str
    split: str
    src: Corpus
    tgt: Corpus
    gold: frozenset[tuple[str, str]] | None
    gold_path: Path | None = None


def bucc_paths(data_dir: Path | str, lang: str, split: str) -> tuple[Path, Path, Path]:
    """``(xx file, en file, gold file)`` of ``DIR/bucc2018/{lang}-en.{split}.*``."""
    stem = Path(data_dir) / "bucc2018" / f"{lang}-en.{split}"
    return (
        stem.with_name(f"{stem.name}.{lang}"),
        stem.with_name(f"{stem.name}.en"),
        stem.with_name(f"{stem.name}.gold"),
    )


def read_bucc_split(data_dir: Path | str, lang: str, split: str) -> BuccSplit:
    """Read ``DIR/bucc2018/{lang}-en.{split}.{lang}``, ``.en`` and, if present, ``.gold``.

    The sentence files are ``id<TAB>sentence`` TSV (see ``read_bucc_corpus``); the gold file has
    ``xx_id<TAB>en_id`` lines whose ids must exist in the sentence files.
    """
    src_path, tgt_path, gold_path = bucc_paths(data_dir, lang, split)
    src = read_bucc_corpus(src_path)
    tgt = read_bucc_corpus(tgt_path)
    gold = read_bucc_gold(gold_path, src, tgt) if gold_path.exists() else None
    return BuccSplit(lang=lang, split=split, src=src, tgt=tgt, gold=gold, gold_path=gold_path)


def read_bucc_gold(path: Path | str, src: Corpus, tgt: Corpus) -> frozenset[tuple[str, str]]:
    """Gold alignments ``src_id<TAB>tgt_id`` (one per line; repeated lines count once).

    Raises ``InputError`` for a line that is not exactly two tab-separated fields, or an id absent
    from ``src.ids`` / ``tgt.ids`` (and when either corpus has no ids at all).
    """
    path = Path(path)
    if src.ids is None or tgt.ids is None:
        plain = src.path if src.ids is None else tgt.path
        raise InputError(path, f"gold alignments need ids, but {plain} is a plain-text corpus")
    src_ids, tgt_ids = set(src.ids), set(tgt.ids)
    pairs: set[tuple[str, str]] = set()
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise InputError(path, "expected 'src_id<TAB>tgt_id'", number)
        src_id, tgt_id = fields
        if src_id not in src_ids:
            raise InputError(path, f"id {src_id!r} does not exist in {src.path}", number)
        if tgt_id not in tgt_ids:
            raise InputError(path, f"id {tgt_id!r} does not exist in {tgt.path}", number)
        pairs.add((src_id, tgt_id))
    return frozenset(pairs)
