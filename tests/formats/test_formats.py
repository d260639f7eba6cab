"""Data formats: readers, layouts, and every bad-input error (file and line named)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xretrieve.core.errors import InputError
from xretrieve.formats import (
    Corpus,
    distinct_texts,
    embedding_path,
    read_bucc_corpus,
    read_bucc_gold,
    read_bucc_split,
    read_corpus,
    read_embeddings,
    read_tatoeba,
    read_text_corpus,
)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_plain_text_keeps_empty_lines_and_strips_line_breaks(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "\ufeffeins\r\n\nzwei\u2028drei\nvier")
    corpus = read_text_corpus(path)
    assert corpus == Corpus(path, ("eins", "", "zwei\u2028drei", "vier"), None)
    assert len(corpus) == 4


def test_bucc_corpus_splits_at_first_tab(tmp_path: Path) -> None:
    path = write(tmp_path / "de-en.test.de", "de-1\tHallo Welt\nde-2\tmit\tTab\n")
    corpus = read_bucc_corpus(path)
    assert corpus.ids == ("de-1", "de-2")
    assert corpus.texts == ("Hallo Welt", "mit\tTab")


def test_read_corpus_sniffs_tsv_from_the_first_line(tmp_path: Path) -> None:
    tsv = write(tmp_path / "a.tsv", "1\ta\n2\tb\n")
    plain = write(tmp_path / "b.txt", "no tab here\n1\ta\n")
    broken = write(tmp_path / "c.tsv", "1\ta\nno tab here\n")
    assert read_corpus(tsv).ids == ("1", "2")
    assert read_corpus(plain).ids is None
    assert read_corpus(plain).texts == ("no tab here", "1\ta")
    with pytest.raises(InputError, match=r"c\.tsv:2: .*no tab"):
        read_corpus(broken)


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("a\tx\nno tab\n", 2, "no tab"),
        ("a\tx\nb\ty\na\tz\n", 3, "duplicate id 'a' (first on line 1)"),
        ("a\tx\n\ty\n", 2, "empty id"),
        (b"a\tx\nb\t\xff\xfe\n", 2, "invalid UTF-8"),
    ],
)
def test_bad_bucc_corpus_names_file_and_line(
    tmp_path: Path, content: str | bytes, line: int, fragment: str
) -> None:
    path = write(tmp_path / "bad.de", content)
    with pytest.raises(InputError) as caught:
        read_bucc_corpus(path)
    assert caught.value.path == path and caught.value.line == line
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_invalid_utf8_line_number_in_plain_text(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", b"ok\nok\nbad \xc3\x28 byte\nok\n")
    with pytest.raises(InputError, match=r"x\.txt:3: invalid UTF-8"):
        read_text_corpus(path)


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "empty.txt", content)
    with pytest.raises(InputError, match="empty file"):
        read_corpus(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found") as caught:
        read_corpus(tmp_path / "nope.txt")
    assert caught.value.path == tmp_path / "nope.txt"
    with pytest.raises(InputError, match="is a directory"):
        read_corpus(tmp_path)


def bucc_dir(tmp_path: Path, gold: str | None = "d1\te2\n") -> Path:
    write(tmp_path / "bucc2018" / "de-en.sample.de", "d1\tHallo\nd2\tWelt\n")
    write(tmp_path / "bucc2018" / "de-en.sample.en", "e1\tworld\ne2\thello\n")
    if gold is not None:
        write(tmp_path / "bucc2018" / "de-en.sample.gold", gold)
    return tmp_path


def test_bucc_split_reads_all_three_files(tmp_path: Path) -> None:
    split = read_bucc_split(bucc_dir(tmp_path, "d1\te2\nd2\te1\nd1\te2\n"), "de", "sample")
    assert (split.lang, split.split) == ("de", "sample")
    assert split.src.ids == ("d1", "d2") and split.tgt.texts == ("world", "hello")
    assert split.gold == frozenset({("d1", "e2"), ("d2", "e1")})
    assert split.gold_path == tmp_path / "bucc2018" / "de-en.sample.gold"


def test_bucc_split_without_gold(tmp_path: Path) -> None:
    assert read_bucc_split(bucc_dir(tmp_path, gold=None), "de", "sample").gold is None


@pytest.mark.parametrize(
    ("gold", "line", "fragment"),
    [
        ("d1\te2\nd3\te1\n", 2, "id 'd3' does not exist"),
        ("d1\te9\n", 1, "id 'e9' does not exist"),
        ("d1\te2\nd2 e1\n", 2, "expected 'src_id<TAB>tgt_id'"),
        ("d1\te2\textra\n", 1, "expected 'src_id<TAB>tgt_id'"),
    ],
)
def test_bad_gold(tmp_path: Path, gold: str, line: int, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        read_bucc_split(bucc_dir(tmp_path, gold), "de", "sample")
    assert caught.value.path.name == "de-en.sample.gold"
    assert caught.value.line == line and fragment in str(caught.value)


def test_gold_needs_ids(tmp_path: Path) -> None:
    plain = read_text_corpus(write(tmp_path / "a.txt", "x\n"))
    with pytest.raises(InputError, match="plain-text corpus"):
        read_bucc_gold(write(tmp_path / "g", "1\t2\n"), plain, plain)


def test_missing_bucc_file_is_named(tmp_path: Path) -> None:
    bucc_dir(tmp_path)
    with pytest.raises(InputError, match=r"de-en\.training\.de: file not found"):
        read_bucc_split(tmp_path, "de", "training")


def test_tatoeba_pair(tmp_path: Path) -> None:
    write(tmp_path / "tatoeba" / "tatoeba.deu-eng.deu", "Hallo\nWelt\n")
    write(tmp_path / "tatoeba" / "tatoeba.deu-eng.eng", "Hello\nWorld\n")
    pair = read_tatoeba(tmp_path, "deu")
    assert pair.lang == "deu" and pair.src.texts == ("Hallo", "Welt")
    assert pair.eng.texts == ("Hello", "World") and pair.eng.ids is None


def test_tatoeba_line_counts_must_match(tmp_path: Path) -> None:
    write(tmp_path / "tatoeba" / "tatoeba.deu-eng.deu", "Hallo\nWelt\n")
    write(tmp_path / "tatoeba" / "tatoeba.deu-eng.eng", "Hello\n")
    with pytest.raises(InputError, match="has 1 lines but .* has 2"):
        read_tatoeba(tmp_path, "deu")


def test_embedding_path_mirrors_data_dir(tmp_path: Path) -> None:
    data_file = tmp_path / "data" / "bucc2018" / "de-en.test.de"
    assert embedding_path(tmp_path / "emb", tmp_path / "data", data_file) == (
        tmp_path / "emb" / "bucc2018" / "de-en.test.de.npy"
    )
    with pytest.raises(InputError, match="not inside the data directory"):
        embedding_path(tmp_path / "emb", tmp_path / "data", tmp_path / "other" / "x.de")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_read_embeddings_maps_without_copying(tmp_path: Path, dtype: type) -> None:
    matrix = np.arange(12, dtype=dtype).reshape(3, 4)
    np.save(tmp_path / "e.npy", matrix)
    loaded = read_embeddings(tmp_path / "e.npy", rows=3, dim=4)
    assert isinstance(loaded, np.memmap) and loaded.dtype == dtype
    assert not loaded.flags.writeable
    np.testing.assert_array_equal(loaded, matrix)


@pytest.mark.parametrize(
    ("dtype", "bad", "hint"),
    [
        (np.float32, np.nan, ""),
        (np.float32, -np.inf, ""),
        (np.float16, np.inf, "float16 overflow"),
    ],
)
def test_read_embeddings_refuses_non_finite_rows(
    tmp_path: Path, dtype: type, bad: float, hint: str
) -> None:
    matrix = np.ones((40_000, 4), dtype=dtype)  # past the first block of the scan
    matrix[20_001, 2] = bad
    matrix[30_000, 0] = bad
    np.save(tmp_path / "e.npy", matrix)
    with pytest.raises(
        InputError, match="row 20001 .line 20002 of its data file. holds NaN"
    ) as caught:
        read_embeddings(tmp_path / "e.npy", rows=40_000)
    assert caught.value.path == tmp_path / "e.npy" and hint in str(caught.value)


@pytest.mark.parametrize(
    ("array", "rows", "dim", "fragment"),
    [
        (np.zeros((3, 4), np.float32), 5, None, "has 3 rows but its data file has 5 lines"),
        (np.zeros((3, 4), np.float32), 3, 8, "has dimension 4, expected 8"),
        (np.zeros(4, np.float32), 4, None, "expected a 2-D"),
        (np.zeros((3, 4), np.int64), 3, None, "expected float16 or float32"),
    ],
)
def test_bad_embeddings(
    tmp_path: Path, array: np.ndarray, rows: int, dim: int | None, fragment: str
) -> None:
    np.save(tmp_path / "e.npy", array)
    with pytest.raises(InputError, match=fragment) as caught:
        read_embeddings(tmp_path / "e.npy", rows=rows, dim=dim)
    assert caught.value.path == tmp_path / "e.npy"


def test_unreadable_or_missing_embeddings(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="embeddings file not found"):
        read_embeddings(tmp_path / "none.npy", rows=1)
    write(tmp_path / "junk.npy", b"not numpy at all")
    with pytest.raises(InputError, match="not a readable .npy"):
        read_embeddings(tmp_path / "junk.npy", rows=1)


def test_distinct_texts_first_occurrence_order() -> None:
    first_rows, inverse = distinct_texts(["b", "a", "b", "c", "a", "b"])
    np.testing.assert_array_equal(first_rows, [0, 1, 3])
    np.testing.assert_array_equal(inverse, [0, 1, 0, 2, 1, 0])
    assert first_rows.dtype == np.int64 and inverse.dtype == np.int64
