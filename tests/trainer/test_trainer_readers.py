"""Trainer data readers: presets of the public releases, and errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xretrieve.core.errors import InputError
from xretrieve.trainer import config_from_dict
from xretrieve.trainer.readers import read_task_file, task_labels


def _task(tmp_path: Path, lines: list, **entry):
    path = tmp_path / entry.pop("filename", "data.jsonl")
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    config = config_from_dict({"tasks": [{"train": str(path), **entry}]})
    return config.tasks[0], path


def _read(task, path):
    return read_task_file(task, path, task_labels(task), None)


def test_mnli_preset_skips_no_consensus_and_maps_labels(tmp_path: Path) -> None:
    task, path = _task(
        tmp_path,
        [
            {"sentence1": "a", "sentence2": "b", "gold_label": "neutral"},
            {"sentence1": "a", "sentence2": "b", "gold_label": "-"},
            {"sentence1": "c", "sentence2": "d", "gold_label": "contradiction"},
        ],
        preset="mnli",
    )
    data = _read(task, path)
    assert [e.label for e in data.examples] == [1, 2]
    assert data.labels == ("entailment", "neutral", "contradiction")


def test_integer_labels_index_the_label_list_and_fields_override(tmp_path: Path) -> None:
    task, path = _task(
        tmp_path,
        [{"q1": "x", "q2": "y", "label": 1}, {"q1": "x", "q2": "y", "label": "0"}],
        preset="qqp",
        fields={"text_a": "q1", "text_b": "q2"},
    )
    assert [e.label for e in _read(task, path).examples] == [1, 0]


@pytest.mark.parametrize(
    ("lines", "preset", "message", "line"),
    [
        (['{"sentence1": "a", "gold_label": "neutral"}'], "mnli", "missing field 'sentence2'", 1),
        (
            ["", '{"sentence1": "a", "sentence2": "b", "gold_label": "maybe"}'],
            "mnli",
            "unknown label 'maybe'",
            2,
        ),
        (
            ['{"context": "a", "hypothesis": "b", "label": "e"}', "{not json"],
            "anli",
            "not valid JSON",
            2,
        ),
        (
            ['{"sentence1": "a", "sentence2": "b", "gold_label": NaN}'],
            "mnli",
            "NaN is not a JSON number",
            1,
        ),
        (['{"question1": "a", "question2": "b", "label": 5}'], "qqp", "out of range", 1),
        (['{"ctx": "a", "endings": ["x", "y"], "label": 3}'], "hellaswag", "names none of", 1),
        (['{"tokens": ["a", "b"], "tags": ["N"]}'], "ccg", "2 words but 1 tags", 1),
        (['{"caption": "a cat", "image": 0}'], "image_text", "old trainer layout", 1),
        (['{"caption": "a cat", "image_id": "x"}'], "image_text", "unknown image id 'x'", 1),
        (['{"caption": "a", "image_id": "i0"}', '{"id": "i0"}'], "image_text", "IGLUE", 2),
        (['{"id": "i0", "sentences": "a"}'], "image_text", "list of strings", 1),
        (["[1, 2]"], "mnli", "JSON object", 1),
    ],
)
def test_bad_data_names_file_and_line(tmp_path: Path, lines, preset, message, line) -> None:
    extra = {}
    if preset == "image_text":
        (tmp_path / "image_ids.txt").write_text("i0\ni1\n")
        extra = {"image_features": str(tmp_path / "images.npy")}
    task, path = _task(tmp_path, lines, preset=preset, **extra)
    with pytest.raises(InputError) as info:
        _read(task, path)
    assert info.value.path == path and info.value.line == line
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    task, path = _task(tmp_path, ["", "  "], preset="mnli")
    with pytest.raises(InputError, match="no examples") as info:
        _read(task, path)
    assert info.value.path == path


def test_squad_json_and_answer_not_in_context(tmp_path: Path) -> None:
    document = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "The red cat sat.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "what?",
                                "answers": [{"text": "cat", "answer_start": 8}],
                            },
                            {"id": "q2", "question": "who?", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "train-v2.0.json"
    path.write_text(json.dumps(document, indent=2))
    task = config_from_dict({"tasks": [{"preset": "squad_v2", "train": str(path)}]}).tasks[0]
    data = _read(task, path)
    assert [e.answers for e in data.examples] == [(("cat", 8),), ()]
    # v1.1 preset: an unanswerable question is an error.
    task_v1 = config_from_dict({"tasks": [{"preset": "squad", "train": str(path)}]}).tasks[0]
    with pytest.raises(InputError, match="q2 has no answer"):
        _read(task_v1, path)
    document["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 4
    path.write_text(json.dumps(document, indent=2))
    with pytest.raises(InputError, match="'cat' of question q1 does not occur") as info:
        _read(task, path)
    lines = path.read_text().splitlines()
    assert '"q1"' in lines[info.value.line - 1]


def test_jsonl_squad_answers_mapping(tmp_path: Path) -> None:
    task, path = _task(
        tmp_path,
        [
            {
                "id": "1",
                "question": "q",
                "context": "abc def",
                "answers": {"text": ["dex"], "answer_start": [4]},
            }
        ],
        preset="squad",
    )
    with pytest.raises(InputError, match="does not occur") as info:
        _read(task, path)
    assert info.value.line == 1


def test_commonsenseqa_and_cosmosqa_presets(tmp_path: Path) -> None:
    csqa = {
        "answerKey": "C",
        "question": {
            "stem": "Where?",
            "choices": [{"label": k, "text": f"t{k}"} for k in "ABCDE"],
        },
    }
    task, path = _task(tmp_path, [csqa], preset="commonsenseqa")
    (example,) = _read(task, path).examples
    assert example.label == 2 and example.question == "Where?" and len(example.choices) == 5
    cosmos = {
        "context": "c",
        "question": "q",
        "label": "1",
        **{f"answer{i}": f"a{i}" for i in range(4)},
    }
    task, path = _task(tmp_path, [cosmos], preset="cosmosqa", filename="cosmos.jsonl")
    (example,) = _read(task, path).examples
    assert example.label == 1 and example.choices == ("a0", "a1", "a2", "a3")


def test_conll_columns(tmp_path: Path) -> None:
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- O\n\nJohn NNP B-PER\nruns VBZ O\n\nHi UH O\n")
    task = config_from_dict({"tasks": [{"preset": "conll", "train": str(path)}]}).tasks[0]
    data = _read(task, path)
    assert [e.words for e in data.examples] == [("John", "runs"), ("Hi",)]
    assert data.labels == ("B-PER", "O")
    path.write_text("John\n")
    task = config_from_dict(
        {"tasks": [{"preset": "conll", "train": str(path), "fields": {"tags": "2"}}]}
    ).tasks[0]
    with pytest.raises(InputError, match="columns") as info:
        _read(task, path)
    assert info.value.line == 1


def test_declared_tags_reject_unknown(tmp_path: Path) -> None:
    task, path = _task(
        tmp_path, [{"tokens": "a b", "tags": "N X"}], preset="ccg", labels=["N", "V"]
    )
    with pytest.raises(InputError, match="unknown tag 'X'"):
        _read(task, path)


def test_a_utf8_byte_order_mark_is_read_like_every_other_reader(tmp_path: Path) -> None:
    bom = "\ufeff".encode()
    task, path = _task(
        tmp_path,
        [{"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}],
        preset="mnli",
    )
    path.write_bytes(bom + path.read_bytes())
    assert [e.label for e in _read(task, path).examples] == [1]
    conll = tmp_path / "train.conll"
    conll.write_bytes(bom + b"John NNP B-PER\nruns VBZ O\n")
    task = config_from_dict({"tasks": [{"preset": "conll", "train": str(conll)}]}).tasks[0]
    assert [e.words for e in _read(task, conll).examples] == [("John", "runs")]


def test_old_row_number_captions_read_with_listed_ids_and_image_id_field(tmp_path: Path) -> None:
    """The migration of the earlier layout: image_ids.txt lists 0..N-1, fields.image_id names
    the old row-number field."""
    (tmp_path / "image_ids.txt").write_text("0\n1\n2\n")
    task, path = _task(
        tmp_path,
        [{"caption": "a cat", "image": 2}, {"caption": "a dog", "image": 0}],
        preset="image_text",
        image_features=str(tmp_path / "images.npy"),
        fields={"image_id": "image"},
    )
    data = _read(task, path)
    assert [(e.caption, e.image) for e in data.examples] == [("a cat", 2), ("a dog", 0)]
