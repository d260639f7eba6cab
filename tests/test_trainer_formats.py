"""Each public release's layout and the Hugging Face export of each preset, as fixture files in
that exact layout, detected per file (one task may mix layouts across its files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xretrieve.errors import InputError
from xretrieve.trainer import config_from_dict
from xretrieve.trainer.readers import (
    FileFormat,
    detect_format,
    read_task_file,
    read_train_files,
    task_labels,
)

MNLI_TSV_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, records: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


def _task(train, **entry):
    files = [str(p) for p in train] if isinstance(train, list) else str(train)
    return config_from_dict({"tasks": [{"train": files, **entry}]}).tasks[0]


def _read(task, path=None):
    return read_task_file(task, path or task.train, task_labels(task), None)


def _mnli_tsv_row(i: int, s1: str, s2: str, gold: str) -> str:
    parse = "( x )"
    return (
        f"{i}\t{i}\t{i}n\tfiction\t{parse}\t{parse}\t{parse}\t{parse}\t{s1}\t{s2}\t{gold}\t{gold}"
    )


def test_mnli_glue_tsv_reads_by_column_name_and_keeps_quotes(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "MNLI/train.tsv",
        "\n".join(
            [
                MNLI_TSV_HEADER,
                _mnli_tsv_row(0, 'He said "stop', "He spoke.", "entailment"),
                _mnli_tsv_row(1, "A cat.", "No animal.", "contradiction"),
                _mnli_tsv_row(2, "A cat.", "A dog.", "-"),
            ]
        )
        + "\n",
    )
    task = _task(path, preset="mnli")
    assert detect_format(path, task) is FileFormat.TSV
    data = _read(task)
    assert [(e.text_a, e.text_b, e.label) for e in data.examples] == [
        ('He said "stop', "He spoke.", 0),
        ("A cat.", "No animal.", 2),
    ]


def test_mnli_tsv_row_with_missing_column_names_its_line(tmp_path: Path) -> None:
    row = _mnli_tsv_row(0, "a", "b", "neutral")
    path = _write(
        tmp_path / "dev_matched.tsv", f"{MNLI_TSV_HEADER}\n{row}\n{row[: row.rindex(chr(9))]}\n"
    )
    with pytest.raises(InputError, match=r"dev_matched.tsv:3: expected 12 columns.*got 11"):
        _read(_task(path, preset="mnli"))


def test_mnli_hugging_face_glue_export(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "glue_mnli_train.jsonl",
        [
            {"premise": "a", "hypothesis": "b", "label": 1, "idx": 0},
            {"premise": "c", "hypothesis": "d", "label": 2, "idx": 1},
        ],
    )
    data = _read(_task(path, preset="mnli"))
    assert [(e.text_a, e.label) for e in data.examples] == [("a", 1), ("c", 2)]
    assert data.labels == ("entailment", "neutral", "contradiction")


def test_anli_hugging_face_and_official_rounds_as_a_list_of_train_files(tmp_path: Path) -> None:
    r1 = _jsonl(
        tmp_path / "anli_v1.0/R1/train.jsonl",
        [{"uid": "u1", "context": "p1", "hypothesis": "h1", "label": "c", "reason": "", "tag": ""}],
    )
    r2 = _jsonl(
        tmp_path / "anli_v1.0/R2/train.jsonl",
        [{"uid": "u2", "context": "p2", "hypothesis": "h2", "label": "n", "reason": "", "tag": ""}],
    )
    hf = _jsonl(
        tmp_path / "hf/train_r3.json",
        [{"uid": "u3", "premise": "p3", "hypothesis": "h3", "label": 0, "reason": ""}],
    )
    task = _task([r1, r2, hf], preset="anli")
    assert task.train_files == (r1, r2, hf)
    data = read_train_files(task, task_labels(task))
    assert [(e.text_a, e.label) for e in data.examples] == [("p1", 2), ("p2", 1), ("p3", 0)]
    capped = _task([r1, r2, hf], preset="anli", max_train_examples=2)
    assert len(read_train_files(capped, task_labels(capped)).examples) == 2


def test_qqp_glue_tsv(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "QQP/dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        '7\t1\t2\tWhat is "AI?\tWhat is AI?\t1\n'
        "8\t3\t4\tHow old?\tWhere?\t0\n",
    )
    data = _read(_task(path, preset="qqp"))
    assert [(e.text_a, e.label) for e in data.examples] == [('What is "AI?', 1), ("How old?", 0)]


def test_squad_hugging_face_json_lines_in_a_json_file(tmp_path: Path) -> None:
    context = "The cat sat on the mat."
    path = _jsonl(
        tmp_path / "squad/train.json",
        [
            {
                "id": "q1",
                "title": "Cats",
                "context": context,
                "question": "Where did the cat sit?",
                "answers": {"text": ["the mat"], "answer_start": [15]},
            },
            {
                "id": "q2",
                "title": "Cats",
                "context": context,
                "question": "Who sat?",
                "answers": {"text": ["The cat"], "answer_start": [0]},
            },
        ],
    )
    task = _task(path, preset="squad")
    assert detect_format(path, task) is FileFormat.JSONL
    data = _read(task)
    assert [(e.id, e.answers) for e in data.examples] == [
        ("q1", (("the mat", 15),)),
        ("q2", (("The cat", 0),)),
    ]


@pytest.mark.parametrize("indent", [None, 2])
def test_squad_official_document_still_read(tmp_path: Path, indent: int | None) -> None:
    document = {
        "version": "1.1",
        "data": [
            {
                "title": "Cats",
                "paragraphs": [
                    {
                        "context": "The cat sat.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Who?",
                                "answers": [{"text": "The cat", "answer_start": 0}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = _write(tmp_path / "train-v1.1.json", json.dumps(document, indent=indent))
    task = _task(path, preset="squad")
    assert detect_format(path, task) is FileFormat.SQUAD_JSON
    assert [e.id for e in _read(task).examples] == ["q1"]


def test_cosmosqa_official_csv_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "cosmosqa/train.csv",
        "id,context,question,answer0,answer1,answer2,answer3,label\n"
        '3Q9,"It rained, so we stayed in.\nLater it cleared.",Why stay?,Rain,Sun,"Snow, ice",None,0\n'
        "4Z1,Short.,What?,a,b,c,d,3\n",
    )
    task = _task(path, preset="cosmosqa")
    assert detect_format(path, task) is FileFormat.CSV
    data = _read(task)
    assert data.examples[0].context == "It rained, so we stayed in.\nLater it cleared."
    assert data.examples[0].choices == ("Rain", "Sun", "Snow, ice", "None")
    assert [e.label for e in data.examples] == [0, 3]
    bad = _write(
        tmp_path / "valid.csv",
        "id,context,question,answer0,answer1,answer2,answer3,label\n" + "x,c,q,a,b\n",
    )
    with pytest.raises(InputError, match=r"valid.csv:2: expected 8 columns"):
        _read(_task(bad, preset="cosmosqa"))


def test_commonsenseqa_hugging_face_and_official_layouts(tmp_path: Path) -> None:
    hf = _jsonl(
        tmp_path / "csqa/hf_train.jsonl",
        [
            {
                "id": "a1",
                "question": "Where is a cat?",
                "question_concept": "cat",
                "choices": {"label": ["A", "B", "C"], "text": ["sky", "house", "sea"]},
                "answerKey": "B",
            }
        ],
    )
    official = _jsonl(
        tmp_path / "csqa/train_rand_split.jsonl",
        [
            {
                "id": "a2",
                "question": {
                    "question_concept": "dog",
                    "stem": "Where is a dog?",
                    "choices": [{"label": "A", "text": "park"}, {"label": "B", "text": "moon"}],
                },
                "answerKey": "A",
            }
        ],
    )
    task = _task([hf, official], preset="commonsenseqa")
    data = read_train_files(task, task_labels(task))
    assert [(e.question, e.choices, e.label) for e in data.examples] == [
        ("Where is a cat?", ("sky", "house", "sea"), 1),
        ("Where is a dog?", ("park", "moon"), 0),
    ]


def test_ccg_jiant_tsv(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ccg/ccg.train",
        "text\ttags\nVinken sleeps .\tN S[dcl]\\NP .\n\nThe cat\tNP[nb]/N N\n",
    )
    task = _task(path, preset="ccg")
    assert detect_format(path, task) is FileFormat.TAGS_TSV
    data = _read(task)
    assert [(e.words, e.tags) for e in data.examples] == [
        (("Vinken", "sleeps", "."), ("N", "S[dcl]\\NP", ".")),
        (("The", "cat"), ("NP[nb]/N", "N")),
    ]
    bad = _write(tmp_path / "ccg/ccg.dev", "a b\tN\tN\n")
    with pytest.raises(InputError, match=r"ccg.dev:1: expected 'tokens<TAB>tags'"):
        _read(task, bad)


def test_ccgbank_auto_leaf_supertags(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ccgbank/AUTO/00/wsj_0001.auto",
        "ID=wsj_0001.1 PARSER=GOLD NUMPARSE=1\n"
        "(<T S[dcl] 0 2> (<T S[dcl] 1 2> (<T NP 0 1> (<L N NNP NNP Vinken N>) ) "
        "(<L S[dcl]\\NP VBZ VBZ sleeps S[dcl]\\NP_1>) ) (<L . . . . .>) )\n"
        "ID=wsj_0001.2 PARSER=GOLD NUMPARSE=1\n"
        "(<T NP 0 2> (<L NP[nb]/N DT DT The NP[nb]_1/N_1>) (<L N NN NN cat N>) )\n",
    )
    task = _task(path, preset="ccg")
    assert detect_format(path, task) is FileFormat.CCGBANK_AUTO
    data = _read(task)
    assert [(e.words, e.tags) for e in data.examples] == [
        (("Vinken", "sleeps", "."), ("N", "S[dcl]\\NP", ".")),
        (("The", "cat"), ("NP[nb]/N", "N")),
    ]
    assert data.labels == (".", "N", "NP[nb]/N", "S[dcl]\\NP")
    bad = _write(
        tmp_path / "wsj_0002.auto", "ID=wsj_0002.1 PARSER=GOLD NUMPARSE=1\n(<T NP 0 1> )\n"
    )
    with pytest.raises(InputError, match=r"wsj_0002.auto:2: expected a CCGbank derivation"):
        _read(task, bad)


def test_ccg_tags_inferred_over_all_train_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.tsv", "x y\tN V\n")
    b = _write(tmp_path / "b.tsv", "z\tA\n")
    task = _task([a, b], preset="ccg")
    assert read_train_files(task, task_labels(task)).labels == ("A", "N", "V")


@pytest.mark.parametrize(
    ("name", "preset", "text", "line"),
    [
        (
            "QQP/train.tsv",
            "qqp",
            b"id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
            b"1\t1\t2\ta\tb\t0\n2\t3\t4\t\xff\tb\t1\n",
            3,
        ),
        ("ccg.train", "ccg", b"a b\tN N\n\xc3(\tN\n", 2),
        (
            "wsj_0001.auto",
            "ccg",
            b"ID=wsj_0001.1 PARSER=GOLD NUMPARSE=1\n(<L N NN NN \xff N>)\n",
            2,
        ),
    ],
)
def test_invalid_utf8_names_file_and_line(
    tmp_path: Path, name: str, preset: str, text: bytes, line: int
) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    with pytest.raises(InputError, match=r":\d: invalid UTF-8") as info:
        _read(_task(path, preset=preset))
    assert (info.value.path, info.value.line) == (path, line)
