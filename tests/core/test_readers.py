"""The one reader of each file kind (``xretrieve.core.readers``): a JSON object, JSON Lines, a
``.npy`` array or matrix; each refusal is an ``InputError`` naming the file (and line). Then the
callers that used to read by hand and now get those refusals instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xretrieve.core.errors import InputError
from xretrieve.core.readers import iter_jsonl, open_matrix, open_npy, read_json_object


def _write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_read_json_object_reads_an_object_with_or_without_a_bom(tmp_path: Path) -> None:
    assert read_json_object(_write(tmp_path / "a.json", '{"k": [1, 2.5]}')) == {"k": [1, 2.5]}
    bom = _write(tmp_path / "b.json", b"\xef\xbb\xbf" + b'{"k": 1}')
    assert read_json_object(bom) == {"k": 1}


@pytest.mark.parametrize(
    ("data", "message", "line"),
    [
        ('{\n  "k": 1,\n}', "not valid JSON: Expecting property name", 3),
        ("", "not valid JSON: Expecting value", 1),
        ("[1, 2]", "expected a JSON object, found an array", None),
        ('"text"', "expected a JSON object, found a string", None),
        ("null", "expected a JSON object, found null", None),
        ('{\n"threshold": NaN}', "not valid JSON: NaN is not a JSON number", None),
        ('{"threshold": -Infinity}', "not valid JSON: -Infinity is not a JSON number", None),
        (b'{"k":\n "\xff"}', "invalid UTF-8", 2),
    ],
)
def test_read_json_object_refuses_what_is_no_json_object(
    tmp_path: Path, data: str | bytes, message: str, line: int | None
) -> None:
    path = _write(tmp_path / "x.json", data)
    with pytest.raises(InputError, match=message) as caught:
        read_json_object(path)
    assert caught.value.path == path
    if line is not None:
        assert caught.value.line == line


def test_read_json_object_names_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_json_object(tmp_path / "missing.json")
    with pytest.raises(InputError, match="is a directory"):
        read_json_object(tmp_path)


def test_iter_jsonl_yields_objects_with_their_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.jsonl", '\ufeff{"a": 1}\n\n{"a": 2}\r\n  \n{"a": 3}')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2}), (5, {"a": 3})]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"a": ', "not valid JSON"),
        ("[1]", "expected a JSON object, found an array"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        (b"\xff\xfe", "invalid UTF-8"),
    ],
)
def test_iter_jsonl_names_the_bad_line_or_skips_it(
    tmp_path: Path, bad: str | bytes, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad_bytes = bad.encode("utf-8") if isinstance(bad, str) else bad
    path = _write(tmp_path / "x.jsonl", b'{"a": 1}\n' + bad_bytes + b'\n{"a": 3}\n')
    with pytest.raises(InputError, match=message) as caught:
        list(iter_jsonl(path))
    assert (caught.value.path, caught.value.line) == (path, 2)
    assert list(iter_jsonl(path, skip_bad=True)) == [(1, {"a": 1}), (3, {"a": 3})]
    assert "x.jsonl:2" in caplog.text
    with pytest.raises(InputError, match="file not found"):
        list(iter_jsonl(tmp_path / "missing.jsonl"))


def test_open_npy_maps_an_array_and_names_what_is_not_one(tmp_path: Path) -> None:
    np.save(tmp_path / "m.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    mapped = open_npy(tmp_path / "m.npy")
    assert isinstance(mapped, np.memmap) and mapped.shape == (2, 3)
    _write(tmp_path / "text.npy", "0.1 0.2\n0.3 0.4\n")
    with pytest.raises(InputError, match="does not start with the .npy header") as caught:
        open_npy(tmp_path / "text.npy")
    assert "pickled" not in str(caught.value)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="holds Python objects"):
        open_npy(tmp_path / "objects.npy")
    with pytest.raises(InputError, match="image features file not found"):
        open_npy(tmp_path / "missing.npy", kind="image features")


def test_open_matrix_checks_shape_and_dtype(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.zeros(4, np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((2, 2), np.int64))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    np.save(tmp_path / "wide.npy", np.zeros((2, 2), np.float64))
    with pytest.raises(
        InputError, match=r"expected a 2-D \(rows, dim\) matrix, found shape \(4,\)"
    ):
        open_matrix(tmp_path / "flat.npy")
    with pytest.raises(InputError, match="expected float16 or float32 values, found int64"):
        open_matrix(tmp_path / "ints.npy")
    assert open_matrix(tmp_path / "empty.npy").shape == (0, 4)
    with pytest.raises(InputError, match="expected a non-empty 2-D"):
        open_matrix(tmp_path / "empty.npy", non_empty=True)
    assert open_matrix(tmp_path / "wide.npy").dtype == np.float64
    with pytest.raises(InputError, match="found float64"):
        open_matrix(tmp_path / "wide.npy", dtypes=(np.dtype(np.float32),))


# The callers that read by hand before: a damaged file is now one InputError line, not a
# traceback (each of these failed before the shared readers).


def test_a_damaged_tokenizer_config_is_named(tmp_path: Path) -> None:
    from xretrieve.encoding.tokenize import tokenizer_max_length

    _write(tmp_path / "tokenizer_config.json", '{"model_max_length": 512,')
    with pytest.raises(InputError, match=r"tokenizer_config\.json:1: not valid JSON"):
        tokenizer_max_length(tmp_path)


def test_a_shards_manifest_that_is_no_object_is_named(tmp_path: Path) -> None:
    from xretrieve.formats.embedding_shards import MANIFEST_NAME, read_shards_manifest

    _write(tmp_path / MANIFEST_NAME, "[]")
    with pytest.raises(InputError, match="expected a JSON object, found an array"):
        read_shards_manifest(tmp_path)


def test_a_results_log_with_a_line_of_invalid_utf8_keeps_its_other_rows(tmp_path: Path) -> None:
    from xretrieve.evaluation.results import ResultsLog, row_from_dict, row_to_json

    row = {"checkpoint": "m", "checkpoint_hash": "h", "layer": 1, "task": "bucc", "lang": "de",
           "metric": "f1", "value": 9.5}  # fmt: skip
    line = row_to_json(row_from_dict(row))
    log = _write(tmp_path / "results.jsonl", (line + "\n").encode() + b"\xff torn\n")
    assert [json.loads(row_to_json(kept)) for kept in ResultsLog(log).read()] == [json.loads(line)]
