"""Each public release's layout and the Hugging Face export of each preset, as fixture files in
that exact layout, detected per file (one task may mix layouts across its files)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from xretrieve.core.errors import InputError
from xretrieve.trainer import config_from_dict
from xretrieve.trainer.readers import (
    FileFormat,
    PairExample,
    QAExample,
    TagExample,
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


# --- XTREME target tasks (issue #19): the layouts researchers have, read exactly or refused ---

XNLI_TSV_HEADER = (
    "language\tgold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
    "sentence2_parse\tsentence1\tsentence2\tpromptID\tpairID\tgenre\tlabel1\tlabel2\tlabel3\t"
    "label4\tlabel5\tsentence1_tokenized\tsentence2_tokenized\tmatch"
)


def _xnli_tsv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """The official XNLI-1.0 ``xnli.{dev,test}.tsv``: every language in one file."""
    lines = [XNLI_TSV_HEADER]
    for i, (lang, gold, s1, s2) in enumerate(rows):
        parse = "( x )"
        lines.append(
            f"{lang}\t{gold}\t{parse}\t{parse}\t{parse}\t{parse}\t{s1}\t{s2}\t{i}\t{i}n\t"
            f"fiction\t{gold}\t{gold}\t{gold}\t{gold}\t{gold}\t{s1}\t{s2}\tTrue"
        )
    return _write(path, "\n".join(lines) + "\n")


XNLI_ROWS = [
    ("en", "entailment", "A cat sleeps.", "An animal rests."),
    ("de", "contradiction", "Eine Katze schläft.", "Kein Tier ruht."),
    ("fr", "neutral", "Un chat dort.", "Un chat noir dort."),
    ("de", "neutral", "Ein Hund bellt.", "Ein großer Hund bellt."),
]


@pytest.mark.parametrize("preset", ["mnli", "xnli"])
def test_official_xnli_tsv_needs_a_language_and_reads_only_its_rows(
    tmp_path: Path, preset: str
) -> None:
    path = _xnli_tsv(tmp_path / "XNLI-1.0/xnli.dev.tsv", XNLI_ROWS)
    with pytest.raises(InputError, match=r"xnli.dev.tsv: holds 3 languages \(de, en, fr\)"):
        _read(_task(path, preset=preset))
    data = _read(_task(path, preset=preset, language="de"))
    assert [(e.text_a, e.text_b, e.label) for e in data.examples] == [
        ("Eine Katze schläft.", "Kein Tier ruht.", 2),
        ("Ein Hund bellt.", "Ein großer Hund bellt.", 1),
    ]
    # A validation table chooses by its key; "all" reads every row knowingly.
    task = _task(path, preset=preset)
    fr = read_task_file(task, path, task_labels(task), None, language="fr")
    assert [(e.text_a, e.label) for e in fr.examples] == [("Un chat dort.", 1)]
    assert len(_read(_task(path, preset=preset, language="all")).examples) == 4
    with pytest.raises(InputError, match=r"has no rows in language 'sw'; it holds de, en, fr"):
        _read(_task(path, preset=preset, language="sw"))


def test_hugging_face_xnli_all_languages_records(tmp_path: Path) -> None:
    record = {
        "premise": {"ar": "قطة", "de": "Eine Katze schläft.", "en": "A cat sleeps."},
        "hypothesis": {
            "language": ["ar", "de", "en"],
            "translation": ["حيوان", "Ein Tier ruht.", "An animal rests."],
        },
        "label": 0,
    }
    path = _jsonl(tmp_path / "xnli_all_languages/test.jsonl", [record])
    with pytest.raises(InputError, match=r"test.jsonl:1: each record holds 3 languages \(ar, de"):
        _read(_task(path, preset="xnli"))
    data = _read(_task(path, preset="xnli", language="de"))
    assert data.examples == (PairExample("Eine Katze schläft.", "Ein Tier ruht.", 0),)
    both = _read(_task(path, preset="xnli", language="all"))
    assert [e.text_a for e in both.examples] == ["قطة", "Eine Katze schläft.", "A cat sleeps."]


def test_google_xtreme_xnli_export_and_xnli_mt_train_tsv(tmp_path: Path) -> None:
    export = _jsonl(
        tmp_path / "xtreme_xnli/validation.jsonl",
        [
            {"language": "de", "sentence1": "a", "sentence2": "b", "gold_label": "neutral"},
            {"language": "en", "sentence1": "c", "sentence2": "d", "gold_label": "entailment"},
        ],
    )
    data = _read(_task(export, preset="xnli", language="en"))
    assert data.examples == (PairExample("c", "d", 0),)
    mt = _write(
        tmp_path / "XNLI-MT-1.0/multinli/multinli.train.de.tsv",
        "premise\thypo\tlabel\nEin Mann.\tNiemand.\tcontradictory\nEine Frau.\tJemand.\tentailment\n",
    )
    data = _read(_task(mt, preset="xnli"))
    assert [(e.text_a, e.label) for e in data.examples] == [("Ein Mann.", 2), ("Eine Frau.", 0)]


def _xtreme_tsv(path: Path, rows: list[list[str]]) -> Path:
    """A headerless TSV as XTREME's utils_preprocess.py writes it (``csv.writer``, tab)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter="\t").writerows(rows)
    return path


def test_xtreme_headerless_xnli_and_pawsx_tsvs(tmp_path: Path) -> None:
    train = _xtreme_tsv(
        tmp_path / "xnli/train-en.tsv",
        [['He said "stop" twice.', "He spoke.", "entailment"], ["A b.", "C d.", "contradiction"]],
    )
    assert '"He said ""stop"" twice."' in train.read_text()
    data = _read(_task(train, preset="xnli"))
    assert [(e.text_a, e.text_b, e.label) for e in data.examples] == [
        ('He said "stop" twice.', "He spoke.", 0),
        ("A b.", "C d.", 2),
    ]
    test = _xtreme_tsv(tmp_path / "xnli/test-de.tsv", [["Ein Satz.", "Noch einer."]])
    with pytest.raises(InputError, match=r"test-de.tsv:1: 2 columns, no label .*labels removed"):
        _read(_task(train, preset="xnli"), test)
    task = _task(train, preset="xnli")
    unlabelled = read_task_file(task, test, task_labels(task), None, labelled=False)
    assert unlabelled.examples == (PairExample("Ein Satz.", "Noch einer.", None),)
    pawsx = _xtreme_tsv(tmp_path / "pawsx/dev-de.tsv", [["a", "b", "1"], ["c", "d", "0"]])
    data = _read(_task(pawsx, preset="pawsx"))
    assert [(e.text_a, e.label) for e in data.examples] == [("a", 1), ("c", 0)]
    official = _write(
        tmp_path / "x-final/de/dev_2k.tsv", 'id\tsentence1\tsentence2\tlabel\n1\t"a\tb\t1\n'
    )
    assert [(e.text_a, e.label) for e in _read(_task(official, preset="pawsx")).examples] == [
        ('"a', 1)
    ]


UD_CONLLU = """# newdoc id = n01
# sent_id = 1
# text = Ich gehe zum Markt.
1\tIch\tich\tPRON\tPPER\t_\t2\tnsubj\t_\t_
2\tgehe\tgehen\tVERB\tVVFIN\t_\t0\troot\t_\t_
3-4\tzum\t_\t_\t_\t_\t_\t_\t_\t_
3\tzu\tzu\tADP\tAPPR\t_\t5\tcase\t_\t_
4\tdem\tder\tDET\tART\t_\t5\tdet\t_\t_
5\tMarkt\tMarkt\tNOUN\tNN\t_\t2\tobl\t_\tSpaceAfter=No
5.1\tgeht\tgehen\tVERB\t_\t_\t_\t_\t2:conj\t_
6\t.\t.\tPUNCT\t$.\t_\t2\tpunct\t_\t_

# sent_id = 2
# text = Ja.
1\tJa\tja\tINTJ\tITJ\t_\t0\troot\t_\tSpaceAfter=No
2\t.\t.\tPUNCT\t$.\t_\t1\tpunct\t_\t_

"""


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("de_gsd-ud-train.conllu", {"preset": "conll"}),
        ("de_gsd-ud-train.conllu", {"preset": "udpos"}),
        ("de_gsd-ud-train.conllu", {"type": "tagging"}),
        ("de_gsd-ud-train.conll", {"preset": "conll"}),  # CoNLL-U content under another name
    ],
)
def test_raw_ud_conllu_reads_form_and_upos_of_syntactic_words(
    tmp_path: Path, name: str, entry: dict
) -> None:
    path = _write(tmp_path / name, UD_CONLLU)
    task = _task(path, **entry)
    data = _read(task)
    assert [(e.words, e.tags) for e in data.examples] == [
        (
            ("Ich", "gehe", "zu", "dem", "Markt", "."),
            ("PRON", "VERB", "ADP", "DET", "NOUN", "PUNCT"),
        ),
        (("Ja", "."), ("INTJ", "PUNCT")),
    ]
    assert detect_format(path, task) is FileFormat.CONLLU


def test_conllu_errors_name_the_line(tmp_path: Path) -> None:
    gap = _write(
        tmp_path / "gap.conllu", "1\ta\ta\tX\t_\t_\t0\troot\t_\t_\n3\tb\tb\tX\t_\t_\t1\tdep\t_\t_\n"
    )
    with pytest.raises(InputError, match=r"gap.conllu:2: word id 3 out of sequence"):
        _read(_task(gap, preset="conll"))
    short = _write(tmp_path / "short.conllu", "# text = a\n1\ta\tX\n")
    with pytest.raises(InputError, match=r"short.conllu:2: expected a CoNLL-U word line"):
        _read(_task(short, preset="conll"))
    hidden = _write(
        tmp_path / "ar_nyuad-ud-train.conllu",
        "1\t_\t_\tNOUN\t_\t_\t0\troot\t_\t_\n2\t_\t_\tPUNCT\t_\t_\t1\tpunct\t_\t_\n",
    )
    with pytest.raises(InputError, match=r"FORM column is '_': this treebank is distributed"):
        _read(_task(hidden, preset="udpos"))


PANX_RAW = "de:Angela\tB-PER\nde:Merkel\tI-PER\nde:in\tO\nde:Berlin\tB-LOC\n\nde:Ja\tO\n"


@pytest.mark.parametrize("entry", [{"preset": "panx"}, {"preset": "conll"}, {"type": "tagging"}])
def test_raw_panx_language_prefixes_removed(tmp_path: Path, entry: dict) -> None:
    path = _write(tmp_path / "panx_dataset/de-train", PANX_RAW)
    data = _read(_task(path, **entry))
    assert [(e.words, e.tags) for e in data.examples] == [
        (("Angela", "Merkel", "in", "Berlin"), ("B-PER", "I-PER", "O", "B-LOC")),
        (("Ja",), ("O",)),
    ]
    bad = _write(tmp_path / "panx_dataset/de-dev", "de:Ja\tO\n\nNein\tO\n")
    with pytest.raises(InputError, match=r"de-dev:3: token 'Nein' lacks the 'de:' language prefix"):
        _read(_task(path, **entry), bad)


def test_xtreme_tagging_tsv_sentences_and_test_files_without_tags(tmp_path: Path) -> None:
    train = _write(tmp_path / "panx/train-en.tsv", "Rick\tB-PER\nand\tO\nMorty\tB-PER\n\nHi\tO\n")
    task = _task(train, type="tagging")
    assert [(e.words, e.tags) for e in _read(task).examples] == [
        (("Rick", "and", "Morty"), ("B-PER", "O", "B-PER")),
        (("Hi",), ("O",)),
    ]
    assert detect_format(train, task) is FileFormat.CONLL
    test = _write(tmp_path / "udpos/test-de.tsv", "Ich\ngehe\n\nJa\n")
    for entry in ({"preset": "conll"}, {"preset": "udpos"}, {"type": "tagging"}):
        task = _task(train, **entry)
        with pytest.raises(InputError, match=r"test-de.tsv:1: a word without a tag column"):
            _read(task, test)
        data = read_task_file(task, test, task_labels(task), None, labelled=False)
        assert data.examples == (TagExample(("Ich", "gehe"), None), TagExample(("Ja",), None))
    jiant_like = _write(tmp_path / "two.tsv", "a\tN\n\nb c\tN V\n")
    with pytest.raises(InputError, match=r"two.tsv:3: tag 'N V' is not one tag"):
        _read(_task(jiant_like, type="tagging"))


def test_hugging_face_panx_and_udpos_integer_tags_map_through_class_names(
    tmp_path: Path,
) -> None:
    panx = _jsonl(
        tmp_path / "PAN-X.de/train.jsonl",
        [
            {
                "tokens": ["Angela", "Merkel", "in", "Berlin"],
                "ner_tags": [1, 2, 0, 5],
                "langs": ["de", "de", "de", "de"],
            }
        ],
    )
    data = _read(_task(panx, preset="panx"))
    assert data.examples == (
        TagExample(("Angela", "Merkel", "in", "Berlin"), ("B-PER", "I-PER", "O", "B-LOC")),
    )
    assert data.labels == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
    udpos = _jsonl(
        tmp_path / "udpos.German/train.jsonl", [{"tokens": ["Ich", "gehe"], "pos_tags": [10, 15]}]
    )
    assert _read(_task(udpos, preset="udpos")).examples == (
        TagExample(("Ich", "gehe"), ("PRON", "VERB")),
    )
    plain = {"type": "tagging", "fields": {"words": "tokens", "tags": "ner_tags"}}
    with pytest.raises(InputError, match=r"train.jsonl:1: field 'ner_tags' holds integer tag ids"):
        _read(_task(panx, **plain))
    named = _read(
        _task(panx, **plain, labels=["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"])
    )
    assert named.examples == data.examples
    with pytest.raises(InputError, match=r"tag id 9 in field 'ner_tags' is out of range 0..6"):
        _read(
            _task(
                _jsonl(tmp_path / "bad.jsonl", [{"tokens": ["a"], "ner_tags": [9]}]), preset="panx"
            )
        )


def test_xtreme_qa_test_files_without_answers_are_refused_as_labelled_data(tmp_path: Path) -> None:
    # XTREME's remove_qa_test_annotations: one paragraph per question, answer '' at 0.
    document = {
        "version": "1.0",
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "Berlin ist groß.",
                        "qas": [
                            {
                                "answers": [{"answer_start": 0, "text": ""}],
                                "question": "Was?",
                                "id": "q1",
                            }
                        ],
                    }
                ]
            }
        ],
    }
    path = _write(tmp_path / "xquad/xquad.de.json", json.dumps(document))
    task = _task(path, preset="squad")
    with pytest.raises(InputError, match=r"xquad.de.json:1: question q1 has an empty answer"):
        _read(task)
    data = read_task_file(task, path, None, None, labelled=False)
    assert data.examples == (QAExample("q1", "Was?", "Berlin ist groß.", ()),)


def test_tydiqa_goldp_file_of_every_language_needs_a_language(tmp_path: Path) -> None:
    def qa(qid: str, context: str) -> dict:
        return {"id": qid, "question": "q", "answers": [{"text": context[:3], "answer_start": 0}]}

    document = {
        "version": "1.1",
        "data": [
            {"paragraphs": [{"context": "Helsinki on", "qas": [qa("finnish-1-0", "Helsinki on")]}]},
            {"paragraphs": [{"context": "Nairobi ni", "qas": [qa("swahili-2-0", "Nairobi ni")]}]},
            {"paragraphs": [{"context": "Turku on", "qas": [qa("finnish-3-0", "Turku on")]}]},
        ],
    }
    path = _write(tmp_path / "tydiqa-goldp-v1.1-train.json", json.dumps(document))
    with pytest.raises(InputError, match=r"holds 2 languages \(fi, sw\)"):
        _read(_task(path, preset="squad"))
    data = _read(_task(path, preset="squad", language="fi"))
    assert [e.id for e in data.examples] == ["finnish-1-0", "finnish-3-0"]


def test_anli_plus_one_label_vocabulary_over_anli_mnli_and_snli(tmp_path: Path) -> None:
    anli = _jsonl(
        tmp_path / "anli_v1.0/R1/train.jsonl",
        [
            {"uid": "u", "context": "p1", "hypothesis": "h1", "label": "c"},
            {"uid": "v", "context": "p2", "hypothesis": "h2", "label": "e"},
        ],
    )
    mnli = _jsonl(
        tmp_path / "multinli_1.0/multinli_1.0_train.jsonl",
        [
            {"sentence1": "p3", "sentence2": "h3", "gold_label": "neutral"},
            {"sentence1": "p4", "sentence2": "h4", "gold_label": "-"},
        ],
    )
    snli = _jsonl(
        tmp_path / "hf_snli/train.jsonl",
        [
            {"premise": "p5", "hypothesis": "h5", "label": 2},
            {"premise": "p6", "hypothesis": "h6", "label": -1},
        ],
    )
    task = _task([anli, mnli, snli], preset="anli_plus")
    data = read_train_files(task, task_labels(task))
    assert [(e.text_a, e.label) for e in data.examples] == [
        ("p1", 2),
        ("p2", 0),
        ("p3", 1),
        ("p5", 2),
    ]
    assert data.labels == ("entailment", "neutral", "contradiction")


def test_ccgbank_folder_and_glob_as_a_tasks_data(tmp_path: Path) -> None:
    leaf = "(<T S 0 2> (<L N NN NN {w} N>) (<L . . . . .>) )\n"
    for section, name, word in [
        ("00", "wsj_0001", "a"),
        ("02", "wsj_0200", "b"),
        ("02", "wsj_0201", "c"),
        ("21", "wsj_2100", "d"),
    ]:
        _write(
            tmp_path / f"ccgbank/data/AUTO/{section}/{name}.auto",
            f"ID={name}.1 PARSER=GOLD NUMPARSE=1\n" + leaf.format(w=word),
        )
    _write(tmp_path / "ccgbank/data/AUTO/README", "not a derivation\n")
    folder = tmp_path / "ccgbank/data/AUTO"
    data = read_train_files(_task(folder, preset="ccg"), None)
    assert [e.words[0] for e in data.examples] == ["a", "b", "c", "d"]
    pattern = tmp_path / "ccgbank/data/AUTO/0[2-9]/*.auto"
    task = _task(str(pattern), preset="ccg", validation=str(folder / "00"))
    assert [e.words[0] for e in read_train_files(task, None).examples] == ["b", "c"]
    assert [e.words[0] for e in _read(task, task.validation).examples] == ["a"]
    with pytest.raises(InputError, match=r"no file matches this pattern"):
        read_train_files(_task(str(tmp_path / "ccgbank/*.auto"), preset="ccg"), None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty: is a folder without CCGbank .auto files"):
        read_train_files(_task(empty, preset="ccg"), None)


def test_skip_malformed_glue_rows_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(
        tmp_path / "QQP/train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "1\t1\t2\ta\tb\t0\n2\t3\t4\tbroken row\n3\t5\t6\tc\td\t1\n4\t7\n",
    )
    with pytest.raises(InputError, match=r"train.tsv:3: expected 6 columns.*skip_malformed"):
        _read(_task(path, preset="qqp"))
    with caplog.at_level(logging.WARNING, logger="xretrieve.trainer.readers"):
        data = _read(_task(path, preset="qqp", skip_malformed=True))
    assert [(e.text_a, e.label) for e in data.examples] == [("a", 0), ("c", 1)]
    assert "skipped 2 malformed row(s)" in caplog.text and "first at line 3" in caplog.text


def test_validation_table_reads_each_language_of_one_xnli_file(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from xretrieve.trainer.tasks import build_task
    from xretrieve.trainer.tasks.base import TextSettings

    dev = _xnli_tsv(tmp_path / "XNLI-1.0/xnli.dev.tsv", XNLI_ROWS)
    train = _xtreme_tsv(tmp_path / "xnli/train-en.tsv", [["a", "b", "neutral"]])
    config = _task(train, preset="xnli", validation={"de": str(dev), "fr": str(dev)})
    tokenizer = AutoTokenizer.from_pretrained(tiny_xlmr_checkpoint)
    text = TextSettings(tokenizer, 32, tokenizer.pad_token_id, False, 32, 0.1, len(tokenizer))
    task = build_task(config, text)
    counts = {lang: len(state["eval_features"]) for lang, state in task.languages.items()}
    assert counts == {"de": 2, "fr": 1}
