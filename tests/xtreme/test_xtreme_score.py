"""``xretrieve xtreme score`` against XTREME's ``evaluate.py``: its mock submission (the averages
of its ``evaluate_test.py`` and the report the script writes), submissions of ours whose reports
the script wrote (``tests/data/xtreme/README.md`` says how), hand-computed metrics, file reading
and the error contract (exit 2, one line naming the file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner
from xtreme_cases import (
    EMPTY_TASKS,
    PARTIAL_TASKS,
    empty_submission,
    partial_submission,
    perfect_submission,
)

from xretrieve.cli.app import app
from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.xtreme import TASK_NAMES, TASKS, score_submission, task_by_name
from xretrieve.xtreme.metrics import (
    MLQA_NORMALIZERS,
    SQUAD_NORMALIZER,
    QaQuestion,
    accuracy,
    answer_f1,
    exact_match,
    pair_f1,
    qa_scores,
    span_f1,
)
from xretrieve.xtreme.submission import read_sentences, read_submission_lines

DATA = Path(__file__).resolve().parents[1] / "data" / "xtreme"
MOCK_PREDICTIONS = DATA / "mock" / "predictions"
MOCK_LABELS = DATA / "mock" / "labels"
CASE_LABELS = DATA / "cases" / "labels"
CASE_RANDOM = DATA / "cases" / "random"

# TASK2AVG_SCORES of XTREME's evaluate_test.py. Its udpos numbers were computed with seqeval
# 0.0.12 (2020), which types the chunk of a tag "NOUN" as "NOUN" where seqeval >= 1.0 (what
# `pip install seqeval` gives, and what evaluate.py runs with today) types it "OUN"; with seqeval
# 1.2.2 evaluate.py gives the UDPOS_NOW numbers, which expected/mock.json holds.
EVALUATE_TEST_AVERAGES = {
    "pawsx": {"avg_accuracy": 51.42857142857143},
    "xnli": {"avg_accuracy": 30.666666666666668},
    "panx": {
        "avg_f1": 57.50793650793652,
        "avg_precision": 54.729166666666664,
        "avg_recall": 62.750000000000014,
    },
    "bucc2018": {"avg_f1": 55.0, "avg_precision": 55.0, "avg_recall": 55.0},
    "tatoeba": {"avg_accuracy": 53.611111111111114},
    "xquad": {"avg_exact_match": 77.27272727272727, "avg_f1": 79.9586776859504},
    "mlqa": {"avg_exact_match": 57.142857142857146, "avg_f1": 81.76870748299321},
    "tydiqa": {"avg_exact_match": 88.88888888888889, "avg_f1": 97.22222222222223},
}
UDPOS_SEQEVAL_0_0_12 = {
    "avg_f1": 70.21746048354693,
    "avg_precision": 71.02232625883823,
    "avg_recall": 69.54982073976082,
}
UDPOS_NOW = {
    "avg_f1": 70.39805810699043,
    "avg_precision": 71.21832908642001,
    "avg_recall": 69.71397801088123,
}


@pytest.fixture(scope="module")
def mock_scores():
    return score_submission(MOCK_PREDICTIONS, MOCK_LABELS)


def assert_same_report(ours: object, reference: object, where: str = "") -> None:
    """Same keys in the same order, numbers within 1e-9 (the brief asks 0.01; the arithmetic
    is the reference's, so only all_task's summation order, a set's in the reference, differs)."""
    if isinstance(reference, dict):
        assert isinstance(ours, dict), where
        assert list(ours) == list(reference), where
        for key in reference:
            assert_same_report(ours[key], reference[key], f"{where}/{key}")
    else:
        assert ours == pytest.approx(reference, abs=1e-9), where


def _expected(name: str) -> dict:
    return json.loads((DATA / "expected" / f"{name}.json").read_text(encoding="utf-8"))


# --- the reference's own cases ---------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(EVALUATE_TEST_AVERAGES))
def test_mock_submission_gives_evaluate_test_averages(mock_scores, task: str) -> None:
    averages = mock_scores.task(task).averages
    assert dict(averages) == pytest.approx(EVALUATE_TEST_AVERAGES[task], abs=1e-9)


def test_mock_udpos_is_evaluate_py_with_seqeval_1(mock_scores) -> None:
    averages = dict(mock_scores.task("udpos").averages)
    assert averages == pytest.approx(UDPOS_NOW, abs=1e-9)
    assert _expected("mock")["udpos"]["avg_f1"] == UDPOS_NOW["avg_f1"]
    assert averages["avg_f1"] != pytest.approx(UDPOS_SEQEVAL_0_0_12["avg_f1"], abs=0.1)


def test_mock_submission_report_is_the_reference_report(mock_scores) -> None:
    report = mock_scores.to_json()
    assert_same_report(report, _expected("mock"))
    assert list(report)[:5] == ["all_task", "classification", "tagging", "qa", "retrieval"]
    assert list(report["mlqa"]) == ["exact_match", "f1", "avg_exact_match", "avg_f1", "avg_metric"]
    assert list(report["panx"]["f1"]) == list(task_by_name("panx").languages)


# --- submissions of ours, scored by the reference ---------------------------------------------


def _submission(name: str, tmp_path: Path) -> Path:
    if name == "random":
        return CASE_RANDOM
    if name == "partial":
        return partial_submission(CASE_RANDOM, tmp_path / "partial")
    if name == "empty":
        return empty_submission(tmp_path / "empty")
    return perfect_submission(CASE_LABELS, tmp_path / "perfect")


@pytest.mark.parametrize("name", ["random", "partial", "empty", "perfect"])
def test_our_submissions_score_as_the_reference_scored_them(name: str, tmp_path: Path) -> None:
    scores = score_submission(_submission(name, tmp_path), CASE_LABELS)
    assert_same_report(scores.to_json(), _expected(name))


def test_partial_submission_has_only_its_complete_groups(tmp_path: Path) -> None:
    report = score_submission(_submission("partial", tmp_path), CASE_LABELS).to_json()
    assert list(report) == ["tagging", *PARTIAL_TASKS]  # mewslix/ and README.txt ignored
    assert report["tagging"] == (report["udpos"]["avg_metric"] + report["panx"]["avg_metric"]) / 2


def test_empty_predictions_score_zero(tmp_path: Path) -> None:
    report = score_submission(_submission("empty", tmp_path), CASE_LABELS).to_json()
    assert list(report) == ["qa", *EMPTY_TASKS]
    for task in EMPTY_TASKS:
        assert report[task]["avg_metric"] == 0.0
        assert set(report[task]["f1"].values()) == {0.0}


def test_perfect_predictions_score_100_but_where_there_is_no_entity(tmp_path: Path) -> None:
    report = score_submission(_submission("perfect", tmp_path), CASE_LABELS).to_json()
    # panx nl and ja have no entity at all: seqeval scores 0/0 as 0, perfect or not
    no_entity = {"panx": {"nl", "ja"}}
    for lang in no_entity["panx"]:
        assert "-" not in task_by_name("panx").path(CASE_LABELS, lang).read_text()
    for task in TASKS:
        for metric in task.scoring.metrics:
            for lang, value in report[task.name][metric].items():
                expected = 0.0 if lang in no_entity.get(task.name, ()) else 100.0
                assert value == expected, (task.name, metric, lang)
    assert report["tagging"] == pytest.approx((100 + 100 * 38 / 40) / 2)


def test_random_case_reaches_every_scoring_path() -> None:
    """The generated case is not all-or-nothing: every task has languages strictly between 0
    and 100 (a scorer that rounds, truncates or ignores normalisation would show)."""
    report = _expected("random")
    for task in TASKS:
        values = [v for m in task.scoring.metrics for v in report[task.name][m].values()]
        assert any(0 < v < 100 for v in values), task.name


def test_tasks_argument_scores_only_those(tmp_path: Path) -> None:
    scores = score_submission(MOCK_PREDICTIONS, MOCK_LABELS, tasks=["xnli", "pawsx"])
    assert [s.task.name for s in scores.tasks] == ["pawsx", "xnli"]  # XTREME's order
    assert list(scores.to_json()) == ["classification", "pawsx", "xnli"]
    assert scores.all_task is None


# --- metrics by hand ------------------------------------------------------------------------


def test_accuracy_compares_whole_stripped_lines() -> None:
    assert accuracy(["1", "0", "", "1"], ["1", "1", "", "0"]) == 50.0


def test_pair_f1_scores_sets_of_tab_separated_tuples() -> None:
    gold = ["a\tb", "c\td", "e\tf"]
    # a duplicate counts once, a wrong pair and a blank line are two false positives
    result = pair_f1(gold, ["a\tb", "a\tb", "c\tx", ""])
    assert (result.precision, result.recall) == pytest.approx((100 / 3, 100 / 3))
    assert result.f1 == pytest.approx(100 / 3)
    assert pair_f1(gold, []).as_dict() == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_span_f1_is_seqeval_chunk_f1() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    # one of two chunks right: P = R = F1 = 50
    assert span_f1(gold, [["B-PER", "I-PER", "O", "B-ORG"]]).f1 == 50.0
    # non-strict IOB2: an I- after O starts a chunk
    assert span_f1(gold, [["I-PER", "I-PER", "O", "B-LOC"]]).f1 == 100.0
    # sentences are separate: no chunk runs across a sentence break
    assert span_f1([["B-PER"], ["I-PER"]], [["B-PER", "I-PER"][:1], ["B-PER"]]).recall == 100.0


def test_span_f1_on_pos_tags_follows_seqeval_chunking() -> None:
    # seqeval reads NOUN as tag N of type OUN: runs of one POS tag are one chunk...
    assert span_f1([["NOUN", "NOUN", "VERB"]], [["NOUN", "VERB", "VERB"]]).f1 == 0.0
    # ...and SCONJ (S = single, type CONJ) matches CCONJ (tag C, type CONJ).
    assert span_f1([["SCONJ"]], [["CCONJ"]]).f1 == 100.0


def test_squad_normalisation() -> None:
    assert SQUAD_NORMALIZER("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("an old map, of Paris", "old map of paris", SQUAD_NORMALIZER)
    assert answer_f1("a red car", "red", SQUAD_NORMALIZER) == pytest.approx(2 / 3)
    # ASCII punctuation only: a CJK full stop stays
    assert not exact_match("北京大学。", "北京大学", SQUAD_NORMALIZER)


def test_mlqa_normalisation_per_language() -> None:
    zh, ar, es, de, vi, hi = (MLQA_NORMALIZERS[k] for k in ("zh", "ar", "es", "de", "vi", "hi"))
    assert zh("北京大学。") == "北 京 大 学"  # every Unicode P* goes; each ideograph a token
    assert zh("iPhone手机 2020年") == "iphone 手 机 2020 年"
    assert zh("北京鿐鿐") == "北 京 鿐鿐"  # MLQA's range ends at U+9FA5; U+9FD0 is not split
    assert answer_f1("北京", "北京大学", zh) == pytest.approx(2 / 3)
    assert answer_f1("北京", "北京大学", SQUAD_NORMALIZER) == 0.0
    assert ar("الكتاب الأحمر") == "كتاب أحمر"  # every ال becomes a space
    assert es("La casa, los Andes") == "casa andes"
    assert de("Der Rhein und das Rathaus") == "rhein und rathaus"
    assert vi("của Hà Nội") == "hà nội"
    assert hi("भारत की राजधानी।") == "भारत की राजधानी"  # the danda is punctuation
    assert MLQA_NORMALIZERS["en"]("«The» $5") == "5"  # $ is in ASCII's punctuation


def test_qa_scores_count_unanswered_questions_as_zero() -> None:
    questions = [
        QaQuestion("q1", ("the red car", "a car")),
        QaQuestion("q2", ("Paris",)),
        QaQuestion("q3", ("1889",)),
    ]
    result = qa_scores(questions, {"q1": "car", "q2": "Paris.", "extra": "x"}, SQUAD_NORMALIZER)
    # q1: EM 1 against "a car"; q2: EM 1; q3 unanswered
    assert result.exact_match == pytest.approx(200 / 3)
    assert result.f1 == pytest.approx(200 / 3)
    assert result.unanswered == 1


# --- reading files ----------------------------------------------------------------------------


def test_read_lines_strips_and_keeps_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.tsv"
    path.write_bytes(b" 1 \r\n\t0\r\n\r\n1")
    assert read_submission_lines(path) == ("1", "0", "", "1")


def test_read_sentences_splits_on_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.tsv"
    path.write_text("\nB-PER\nI-PER\n  \nO\n\n\nO\nO\n\n", encoding="utf-8")
    sentences = read_sentences(path)
    # a leading blank line and two in a row make empty sentences; the final blank line does not
    assert sentences.tags == ((), ("B-PER", "I-PER"), ("O",), (), ("O", "O"))
    assert sentences.first_lines == (1, 2, 5, 7, 8)


# --- the command ------------------------------------------------------------------------------


def _run(*args: str):
    return CliRunner().invoke(app, ["xtreme", "score", *args])


def test_cli_json_is_the_reference_report() -> None:
    result = _run("--predictions", str(MOCK_PREDICTIONS), "--labels", str(MOCK_LABELS), "--json")
    assert result.exit_code == 0, result.output
    assert_same_report(json.loads(result.stdout), _expected("mock"))


def test_cli_table_shows_languages_averages_and_groups() -> None:
    result = _run(
        "--predictions", str(MOCK_PREDICTIONS), "--labels", str(MOCK_LABELS),
        "--tasks", "mlqa, xquad,tydiqa",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("zh" in line and "100.00" in line for line in lines)
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    assert ["avg", "57.14", "81.77"] in cells  # mlqa's averages
    assert ["qa", "group", "80.38"] in cells
    assert "all_task" not in result.stdout


def test_cli_help_and_usage() -> None:
    result = CliRunner().invoke(app, ["xtreme", "score", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Usage: xretrieve xtreme score [OPTIONS]" in result.stdout
    assert "<bool>" not in result.stdout
    assert "xtreme" in CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout


def _copy_mock(tmp_path: Path) -> tuple[Path, Path]:
    predictions, labels = tmp_path / "predictions", tmp_path / "labels"
    shutil.copytree(MOCK_PREDICTIONS, predictions)
    shutil.copytree(MOCK_LABELS, labels)
    return predictions, labels


def _error(predictions: Path, labels: Path, *extra: str) -> str:
    """The one stderr line of a failed run (exit 2), and nothing on stdout."""
    result = _run("--predictions", str(predictions), "--labels", str(labels), "--json", *extra)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_language_file_is_named(tmp_path: Path) -> None:
    predictions, labels = _copy_mock(tmp_path)
    (predictions / "xnli" / "test-sw.tsv").unlink()
    assert f"{predictions / 'xnli' / 'test-sw.tsv'}: not found" in _error(predictions, labels)
    shutil.copyfile(MOCK_PREDICTIONS / "xnli" / "test-sw.tsv", predictions / "xnli" / "test-sw.tsv")
    (labels / "mlqa" / "test-zh.json").unlink()
    assert f"{labels / 'mlqa' / 'test-zh.json'}: not found" in _error(predictions, labels)


def test_misaligned_lines_are_named(tmp_path: Path) -> None:
    predictions, labels = _copy_mock(tmp_path)
    path = predictions / "pawsx" / "test-fr.tsv"
    path.write_text(path.read_text() + "1\n")
    message = _error(predictions, labels)
    assert message.startswith(f"error: {path}: has 11 lines but {labels / 'pawsx' / 'test-fr.tsv'}")


def test_misaligned_sentences_are_named(tmp_path: Path) -> None:
    predictions, labels = _copy_mock(tmp_path)
    path = predictions / "panx" / "test-en.tsv"
    lines = path.read_text().splitlines()
    blank = lines.index("")
    path.write_text("\n".join(lines[: blank + 1] + ["O"] + lines[blank + 1 :]) + "\n")
    message = _error(predictions, labels)
    assert f"{path}:{blank + 2}: sentence 2 has" in message
    # a sentence more
    path.write_text("\n".join(lines) + "\n\nO\n")
    assert f"{path}: has 3 sentences but {labels / 'panx' / 'test-en.tsv'} has 2" in _error(
        predictions, labels
    )


def test_nothing_to_score_is_an_error(tmp_path: Path) -> None:
    predictions, labels = _copy_mock(tmp_path)
    for side in (predictions, labels):
        (side / "tatoeba" / "test-ar.tsv").write_text("")
    assert "test-ar.tsv: has no lines to score" in _error(predictions, labels)
    predictions, labels = _copy_mock(tmp_path / "2")
    for side in (predictions, labels):
        (side / "udpos" / "test-af.tsv").write_text("\n")  # one empty sentence: scored 0
    assert score_submission(predictions, labels, tasks=["udpos"]).task("udpos").languages[0].values[
        "f1"
    ] == 0.0  # fmt: skip
    (labels / "xquad" / "test-en.json").write_text('{"data": []}')
    assert "test-en.json: has no questions to score" in _error(predictions, labels)


def test_bad_qa_files_are_named(tmp_path: Path) -> None:
    predictions, labels = _copy_mock(tmp_path)
    path = predictions / "tydiqa" / "test-ko.json"
    path.write_text("{not json")
    assert f"{path}:1: is not valid JSON" in _error(predictions, labels)
    answers = json.loads((MOCK_PREDICTIONS / "tydiqa" / "test-ko.json").read_text())
    answers[next(iter(answers))] = ["a", "list"]
    path.write_text(json.dumps(answers))
    assert f"{path}: answer to" in _error(predictions, labels)
    path.write_text("[]")
    assert f"{path}: expected a JSON object" in _error(predictions, labels)


def test_bad_arguments(tmp_path: Path) -> None:
    assert "unknown XTREME task 'xcopa'" in _error(
        MOCK_PREDICTIONS, MOCK_LABELS, "--tasks", "xcopa"
    )
    missing = tmp_path / "nowhere"
    assert f"{missing}: --labels: not a directory" in _error(MOCK_PREDICTIONS, missing)
    (tmp_path / "empty").mkdir()
    assert "no XTREME task folder" in _error(tmp_path / "empty", MOCK_LABELS)
    only = tmp_path / "only"
    shutil.copytree(MOCK_PREDICTIONS / "xnli", only / "xnli")
    assert f"{only / 'pawsx'}: not found" in _error(only, MOCK_LABELS, "--tasks", "pawsx")


def test_library_raises_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        score_submission(tmp_path, MOCK_LABELS)
    assert caught.value.path == tmp_path
    with pytest.raises(XRetrieveError):
        task_by_name("mewslix")
    assert TASK_NAMES == (
        "pawsx", "xnli", "panx", "udpos", "bucc2018", "tatoeba", "xquad", "mlqa", "tydiqa"
    )  # fmt: skip
