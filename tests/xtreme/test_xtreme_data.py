"""XTREME's data on disk: every task's files in the layout XTREME's download_data.sh and
utils_preprocess.py leave (tiny fixtures written the way those scripts write them), Hugging Face
exports beside them, LASER's Tatoeba files; located, listed and read into exact records."""

from __future__ import annotations

from pathlib import Path

import pytest
from xtreme_fixtures import TYDI_TRAIN
from xtreme_fixtures import jsonl as _jsonl
from xtreme_fixtures import squad as _squad
from xtreme_fixtures import tagged as _tagged
from xtreme_fixtures import tsv as _tsv
from xtreme_fixtures import write as _write

from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.trainer import config_from_dict
from xretrieve.trainer.readers import (
    PairExample,
    QAExample,
    TagExample,
    read_train_files,
    task_labels,
)
from xretrieve.xtreme.data import (
    TASK_PRESETS,
    Layout,
    Split,
    TaskFile,
    locate,
    read_bucc,
    read_examples,
    read_tatoeba_sides,
    split_languages,
    xtreme_files,
)

UD_DE = [[("Ich", "PRON"), ("gehe", "VERB")], [("Ja", "INTJ"), (".", "PUNCT")]]
NER_DE = [[("Angela", "B-PER"), ("Merkel", "I-PER")], [("in", "O"), ("Bonn", "B-LOC")]]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """One XTREME download folder holding a few languages of all nine tasks."""
    root = tmp_path / "download"
    _tsv(root / "xnli/train-en.tsv", [['He said "hi".', "He spoke.", "entailment"]])
    _tsv(root / "xnli/dev-de.tsv", [["Ein Hund.", "Ein Tier.", "entailment"]])
    _tsv(root / "xnli/test-de.tsv", [["Eine Katze.", "Kein Tier."]])
    _tsv(root / "pawsx/train-en.tsv", [["a b", "b a", "0"]])
    _tsv(root / "pawsx/dev-de.tsv", [["c d", "c d", "1"]])
    _tsv(root / "pawsx/test-de.tsv", [["e f", "f e"]])
    _tagged(root / "udpos/train-en.tsv", [[("I", "PRON"), ("go", "VERB")]], False)
    _tagged(root / "udpos/dev-de.tsv", UD_DE, False)
    _tagged(root / "udpos/test-de.tsv", UD_DE, True)
    _tagged(root / "panx/train-en.tsv", [[("Rick", "B-PER")]], False)
    _tagged(root / "panx/dev-de.tsv", NER_DE, False)
    _tagged(root / "panx/test-de.tsv", NER_DE, True)
    _squad(root / "squad/train-v1.1.json", [("s1", "Who?", "Ann came.", "Ann")])
    _squad(root / "squad/dev-v1.1.json", [("s2", "What?", "A cat sat.", "cat")])
    _squad(root / "xquad/xquad.de.json", [("x1", "Wer?", "Anna kam.", None)])
    mlqa = root / "mlqa/MLQA_V1"
    _squad(mlqa / "dev/dev-context-de-question-de.json", [("m1", "Wer?", "Bob kam.", "Bob")])
    _squad(mlqa / "test/test-context-de-question-de.json", [("m2", "Was?", "Ein Hut.", None)])
    tydi = root / "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.fi.dev.json"
    _squad(tydi, [("finnish-1-0", "Mikä?", "Kissa istui.", None)])
    _squad(root / TYDI_TRAIN, [("1", "Who?", "Tom ran.", "Tom")])
    _write(root / "bucc2018/de-en.dev.de", "de-000001\tGuten Tag.\nde-000002\tHallo.\n")
    _write(root / "bucc2018/de-en.dev.en", "en-000001\tGood day.\nen-000002\tBye.\n")
    _write(root / "bucc2018/de-en.dev.gold", "de-000001\ten-000001\n")
    _write(root / "bucc2018/de-en.test.de", "de-000010\tDanke.\n")
    _write(root / "bucc2018/de-en.test.en", "en-000010\tThanks.\n")
    # Tatoeba as tatoeba_preprocess writes it: the source copied, the English side sorted.
    _write(root / "tatoeba/de-en.de", "Danke.\nWie geht's?\n")
    _write(root / "tatoeba/de-en.en", "How are you?\nThanks.\n")
    _write(root / "tatoeba/tatoeba.fra-eng.fra", "Bonjour.\nMerci.\n")
    _write(root / "tatoeba/tatoeba.fra-eng.eng", "Hello.\nThanks.\n")
    return root


def _file(root: Path, task: str, split: str, lang: str, path: str, labels: bool, *more: str):
    return TaskFile(
        task,
        Split(split),
        lang,
        root / path,
        Layout.XTREME,
        labels,
        tuple(root / other for other in more),
    )


def test_locate_every_task_in_the_xtreme_layout(root: Path) -> None:
    expected = [
        ("xnli", "train", "en", "xnli/train-en.tsv", True),
        ("xnli", "dev", "de", "xnli/dev-de.tsv", True),
        ("xnli", "test", "de", "xnli/test-de.tsv", False),
        ("pawsx", "test", "de", "pawsx/test-de.tsv", False),
        ("udpos", "dev", "de", "udpos/dev-de.tsv", True),
        ("udpos", "test", "de", "udpos/test-de.tsv", False),
        ("panx", "train", "en", "panx/train-en.tsv", True),
        ("panx", "test", "de", "panx/test-de.tsv", False),
        ("xquad", "train", "en", "squad/train-v1.1.json", True),
        ("xquad", "dev", "en", "squad/dev-v1.1.json", True),
        ("xquad", "test", "de", "xquad/xquad.de.json", False),
        ("mlqa", "dev", "de", "mlqa/MLQA_V1/dev/dev-context-de-question-de.json", True),
        ("mlqa", "test", "de", "mlqa/MLQA_V1/test/test-context-de-question-de.json", False),
        ("tydiqa", "train", "en", TYDI_TRAIN, True),
        ("tydiqa", "test", "fi", "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.fi.dev.json", False),
    ]
    for task, split, lang, path, labels in expected:
        assert locate(root, task, split, lang) == _file(root, task, split, lang, path, labels)
    assert locate(root, "bucc2018", "dev", "de") == _file(
        root, "bucc2018", "dev", "de", "bucc2018/de-en.dev.de", True,
        "bucc2018/de-en.dev.en", "bucc2018/de-en.dev.gold",
    )  # fmt: skip
    assert locate(root, "bucc2018", "test", "de") == _file(
        root, "bucc2018", "test", "de", "bucc2018/de-en.test.de", False, "bucc2018/de-en.test.en"
    )
    assert locate(root, "tatoeba", Split.TEST, "de") == _file(
        root, "tatoeba", "test", "de", "tatoeba/de-en.de", False, "tatoeba/de-en.en"
    )
    assert locate(root, "tatoeba", "test", "fr") == TaskFile(
        "tatoeba",
        Split.TEST,
        "fr",
        root / "tatoeba/tatoeba.fra-eng.fra",
        Layout.LASER,
        True,
        (root / "tatoeba/tatoeba.fra-eng.eng",),
    )


def test_xtreme_files_lists_what_is_there(root: Path) -> None:
    xnli = xtreme_files(root, "xnli")
    assert {split: sorted(langs) for split, langs in xnli.items()} == {
        Split.TRAIN: ["en"],
        Split.DEV: ["de"],
        Split.TEST: ["de"],
    }
    assert xnli[Split.TEST]["de"].path == root / "xnli/test-de.tsv"
    mlqa = xtreme_files(root, "mlqa")
    assert {split: sorted(langs) for split, langs in mlqa.items()} == {
        Split.TRAIN: ["en"],
        Split.DEV: ["de"],
        Split.TEST: ["de"],
    }
    assert sorted(xtreme_files(root, "tatoeba")[Split.TEST]) == ["de", "fr"]
    assert xtreme_files(root, "bucc2018")[Split.TEST]["de"].has_labels is False
    assert split_languages("xnli", "train") == ("en",)
    assert "sw" in split_languages("xnli", "test")


def test_read_every_example_task_exactly(root: Path) -> None:
    def read(task: str, split: str, lang: str):
        return read_examples(locate(root, task, split, lang)).examples

    assert read("xnli", "train", "en") == (PairExample('He said "hi".', "He spoke.", 0),)
    assert read("xnli", "dev", "de") == (PairExample("Ein Hund.", "Ein Tier.", 0),)
    assert read("xnli", "test", "de") == (PairExample("Eine Katze.", "Kein Tier.", None),)
    assert read("pawsx", "dev", "de") == (PairExample("c d", "c d", 1),)
    assert read("pawsx", "test", "de") == (PairExample("e f", "f e", None),)
    assert read("udpos", "dev", "de") == (
        TagExample(("Ich", "gehe"), ("PRON", "VERB")),
        TagExample(("Ja", "."), ("INTJ", "PUNCT")),
    )
    assert read("udpos", "test", "de") == (
        TagExample(("Ich", "gehe"), None),
        TagExample(("Ja", "."), None),
    )
    assert read("panx", "dev", "de") == (
        TagExample(("Angela", "Merkel"), ("B-PER", "I-PER")),
        TagExample(("in", "Bonn"), ("O", "B-LOC")),
    )
    assert read("panx", "test", "de") == (
        TagExample(("Angela", "Merkel"), None),
        TagExample(("in", "Bonn"), None),
    )
    assert read("xquad", "train", "en") == (QAExample("s1", "Who?", "Ann came.", (("Ann", 0),)),)
    assert read("xquad", "test", "de") == (QAExample("x1", "Wer?", "Anna kam.", ()),)
    assert read("mlqa", "dev", "de") == (QAExample("m1", "Wer?", "Bob kam.", (("Bob", 0),)),)
    assert read("mlqa", "test", "de") == (QAExample("m2", "Was?", "Ein Hut.", ()),)
    assert read("tydiqa", "test", "fi") == (QAExample("finnish-1-0", "Mikä?", "Kissa istui.", ()),)
    data = read_examples(locate(root, "panx", "dev", "de"))
    assert data.labels == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


def test_fine_tuning_config_reads_the_train_file_as_read_examples(root: Path) -> None:
    for task in ("xnli", "pawsx", "udpos", "panx", "xquad"):
        located = locate(root, task, "train", "en")
        entry = {"preset": TASK_PRESETS[task], "train": str(located.path)}
        config = config_from_dict({"tasks": [entry]}).tasks[0]
        trained = read_train_files(config, task_labels(config))
        assert trained.examples == read_examples(located).examples


def test_hugging_face_exports_beside_the_xtreme_files(root: Path) -> None:
    _jsonl(
        root / "xnli/dev-fr.jsonl",
        [
            {"language": "de", "sentence1": "a", "sentence2": "b", "gold_label": "neutral"},
            {"language": "fr", "sentence1": "c", "sentence2": "d", "gold_label": "contradiction"},
        ],
    )
    _jsonl(root / "pawsx/dev-es.jsonl", [{"sentence1": "x", "sentence2": "y", "label": "1"}])
    _jsonl(root / "udpos/dev-fr.jsonl", [{"tokens": ["Je", "vais"], "pos_tags": [10, 15]}])
    _jsonl(
        root / "panx/test-fr.jsonl",
        [{"tokens": ["Paris", "!"], "ner_tags": [5, 0], "langs": ["fr", "fr"]}],
    )
    _jsonl(
        root / "xquad/xquad.es.jsonl",
        [
            {
                "id": "q9",
                "context": "Ana vino.",
                "question": "¿Quién?",
                "answers": {"answer_start": [0], "text": ["Ana"]},
            }
        ],
    )
    tydi = root / "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.sw.dev.jsonl"
    _jsonl(
        tydi,
        [
            {"id": "finnish-7-0", "title": "", "context": "Oulu on.", "question": "q",
             "answers": {"answer_start": [0], "text": ["Oulu"]}},
            {"id": "swahili-8-0", "title": "", "context": "Mombasa ni.", "question": "q",
             "answers": {"answer_start": [0], "text": ["Mombasa"]}},
        ],
    )  # fmt: skip
    found = locate(root, "xnli", "dev", "fr")
    assert (found.path, found.layout, found.has_labels) == (
        root / "xnli/dev-fr.jsonl",
        Layout.HF_JSONL,
        True,
    )
    assert read_examples(found).examples == (PairExample("c", "d", 2),)
    assert read_examples(locate(root, "pawsx", "dev", "es")).examples == (PairExample("x", "y", 1),)
    assert read_examples(locate(root, "udpos", "dev", "fr")).examples == (
        TagExample(("Je", "vais"), ("PRON", "VERB")),
    )
    panx = locate(root, "panx", "test", "fr")
    assert panx.has_labels is True  # google/xtreme keeps the test tags
    assert read_examples(panx).examples == (TagExample(("Paris", "!"), ("B-LOC", "O")),)
    assert read_examples(locate(root, "xquad", "test", "es")).examples == (
        QAExample("q9", "¿Quién?", "Ana vino.", (("Ana", 0),)),
    )
    # google/xtreme's tydiqa holds every language; the located language's questions are read.
    assert [e.id for e in read_examples(locate(root, "tydiqa", "test", "sw")).examples] == [
        "swahili-8-0"
    ]
    assert sorted(xtreme_files(root, "xnli")[Split.DEV]) == ["de", "fr"]


def test_retrieval_tasks_through_the_format_readers(root: Path) -> None:
    dev = read_bucc(locate(root, "bucc2018", "dev", "de"))
    assert dev.src.texts == ("Guten Tag.", "Hallo.")
    assert dev.gold == frozenset({("de-000001", "en-000001")})
    assert read_bucc(locate(root, "bucc2018", "test", "de")).gold is None
    xtreme = read_tatoeba_sides(locate(root, "tatoeba", "test", "de"))
    assert (xtreme.src.texts, xtreme.eng.texts, xtreme.aligned) == (
        ("Danke.", "Wie geht's?"),
        ("How are you?", "Thanks."),
        False,
    )
    laser = read_tatoeba_sides(locate(root, "tatoeba", "test", "fr"))
    assert (laser.src.texts, laser.eng.texts, laser.aligned) == (
        ("Bonjour.", "Merci."),
        ("Hello.", "Thanks."),
        True,
    )
    # Both layouts of one language: XTREME's (its submission's index space) unless asked.
    _write(root / "tatoeba/tatoeba.deu-eng.deu", "Danke.\nWie geht's?\n")
    _write(root / "tatoeba/tatoeba.deu-eng.eng", "Thanks.\nHow are you?\n")
    assert locate(root, "tatoeba", "test", "de").layout is Layout.XTREME
    asked = locate(root, "tatoeba", "test", "de", layout=Layout.LASER)
    assert read_tatoeba_sides(asked).eng.texts == ("Thanks.", "How are you?")
    # google/xtreme tatoeba.spa: aligned, the dataset script's line breaks kept in each field.
    _jsonl(
        root / "tatoeba/es-en.jsonl",
        [
            {"source_sentence": "Hola.\n", "target_sentence": "Hello.\n",
             "source_lang": "spa", "target_lang": "eng"},
        ],
    )  # fmt: skip
    export = locate(root, "tatoeba", "test", "es")
    assert (export.layout, export.has_labels) == (Layout.HF_JSONL, True)
    sides = read_tatoeba_sides(export)
    assert (sides.src.texts, sides.eng.texts, sides.aligned) == (("Hola.",), ("Hello.",), True)


def test_missing_ambiguous_and_unknown_are_errors(root: Path) -> None:
    with pytest.raises(InputError, match=r"xnli/dev-fr.tsv: not found: .* or .*dev-fr.jsonl"):
        locate(root, "xnli", "dev", "fr")
    _jsonl(root / "xnli/dev-de.jsonl", [{"premise": "a", "hypothesis": "b", "label": 0}])
    with pytest.raises(InputError, match=r"dev-de.jsonl: both .*dev-de.tsv and this Hugging"):
        locate(root, "xnli", "dev", "de")
    with pytest.raises(XRetrieveError, match=r"xnli train split has no language 'de'"):
        locate(root, "xnli", "train", "de")
    with pytest.raises(XRetrieveError, match=r"XTREME has no dev split of tatoeba"):
        locate(root, "tatoeba", "dev", "de")
    with pytest.raises(XRetrieveError, match=r"unknown XTREME task 'xcopa'"):
        locate(root, "xcopa", "test", "et")
    _jsonl(root / "bucc2018/fr-en.dev.jsonl", [{"source_sentence": "a", "target_sentence": "b"}])
    with pytest.raises(InputError, match=r"bucc18 export holds only the gold pairs"):
        locate(root, "bucc2018", "dev", "fr")
    with pytest.raises(XRetrieveError, match=r"read_bucc or read_tatoeba"):
        read_examples(locate(root, "bucc2018", "dev", "de"))
    with pytest.raises(InputError, match=r"tatoeba/ja-en.ja: not found.*tatoeba.jpn-eng.jpn"):
        locate(root, "tatoeba", "test", "ja")
