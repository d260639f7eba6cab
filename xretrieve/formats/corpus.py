"""Sentence files: plain text (one sentence per line) and BUCC-style TSV (``id<TAB>sentence``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.readers import read_bytes


@dataclass(frozen=True)
class Corpus:
    """The sentences of one file, in file order.

    ``texts[i]`` is line ``i + 1`` (without its line break; for TSV, the part after the first tab);
    ``ids[i]`` its BUCC id, or ``ids is None`` for plain text and Tatoeba files.
    """

    path: Path
    texts: tuple[str, ...]
    ids: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def read_lines(path: Path | str) -> list[str]:
    """The lines of a UTF-8 file without line breaks (``\\n`` or ``\\r\\n``; a final break ends the
    last line rather than starting an empty one; a leading BOM is dropped).

    Only ``\\n`` separates lines (unlike ``str.splitlines``), so a stray U+2028 or ``\\x85`` inside a
    sentence keeps rows aligned with tools that read line by line. Raises ``InputError`` for a
    missing or unreadable file, an empty file, and invalid UTF-8 (with the offending line).
    """
    path = Path(path)
    data = read_bytes(path)
    if not data:
        raise InputError(path, "empty file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(path, f"invalid UTF-8 ({error.reason})", line) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise InputError(path, "empty file")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_text_corpus(path: Path | str) -> Corpus:
    """A plain-text file, one sentence per line (empty lines are empty sentences)."""
    path = Path(path)
    return Corpus(path=path, texts=tuple(read_lines(path)), ids=None)


def read_bucc_corpus(path: Path | str) -> Corpus:
    """A BUCC 2018 sentence file: ``id<TAB>sentence`` per line (split at the first tab).

    Raises ``InputError`` for a line without a tab, an empty id, or an id seen before.
    """
    path = Path(path)
    return _parse_tsv(path, read_lines(path))


def read_corpus(path: Path | str) -> Corpus:
    """A BUCC TSV corpus if the first line has a tab (then every line must have one: a bad line
    is reported, not silently read as plain text), else a plain-text corpus."""
    path = Path(path)
    lines = read_lines(path)
    if lines and "\t" in lines[0]:
        return _parse_tsv(path, lines)
    return Corpus(path=path, texts=tuple(lines), ids=None)


def _parse_tsv(path: Path, lines: list[str]) -> Corpus:
    ids: list[str] = []
    texts: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        sentence_id, tab, text = line.partition("\t")
        if not tab:
            raise InputError(path, "expected 'id<TAB>sentence', found no tab", number)
        if not sentence_id.strip():
            raise InputError(path, "empty id", number)
        if sentence_id in first_line:
            raise InputError(
                path,
                f"duplicate id {sentence_id!r} (first on line {first_line[sentence_id]})",
                number,
            )
        first_line[sentence_id] = number
        ids.append(sentence_id)
        texts.append(text)
    return Corpus(path=path, texts=tuple(texts), ids=tuple(ids))


def distinct_texts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Unify duplicate sentences, as LASER's ``TextLoadUnify`` and XTREME's ``text_load_unify``.

    Returns ``first_rows`` (u,) int64, the row of each distinct text's first occurrence in order of
    first occurrence, and ``inverse`` (n,) int64 with ``texts[i] == texts[first_rows[inverse[i]]]``.
    """
    position: dict[str, int] = {}
    inverse = np.fromiter(
        (position.setdefault(text, len(position)) for text in texts),
        dtype=np.int64,
        count=len(texts),
    )
    # Distinct texts are numbered in order of first occurrence, so the sorted unique values of
    # ``inverse`` are 0..u-1 and ``np.unique`` returns each one's first row.
    _, first_rows = np.unique(inverse, return_index=True)
    return first_rows.astype(np.int64), inverse
