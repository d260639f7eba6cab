"""XTREME submissions of our own for ``test_xtreme_score.py``: a seeded generator of labels and a
noisy submission for all nine tasks (its output is committed under ``tests/data/xtreme/cases``,
written by ``tests/data/xtreme/make_cases.py``), and submissions derived from it at test time
(some tasks only, empty predictions, perfect predictions).

The generator exercises what the reference reads in its own way: CRLF and missing final newlines,
whitespace around labels, blank lines as examples (classification) and as sentence breaks
(tagging, including empty sentences), multi-token and ill-formed IOB2 entities, UD-POS tags
through seqeval's chunking, BUCC duplicates, blank and three-column lines, QA answers with
articles, punctuation (ASCII and not), Chinese and Arabic text, several gold answers, unanswered
and extra predictions, and JSON with and without SQuAD's ``data`` wrapper."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from xretrieve.xtreme.tasks import TASKS, Scoring, XtremeTask

SEED = 20240519

XNLI_LABELS = ("contradiction", "entailment", "neutral")
NER_TYPES = ("PER", "ORG", "LOC")
UPOS = ("ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X").split()

# A few answer phrases per language (QA gold answers are drawn from these).
PHRASES: dict[str, tuple[str, ...]] = {
    "en": ("the Eiffel Tower", "a red car", "1889", "George Washington", "an old map of Paris"),
    "es": ("la casa blanca", "el río Amazonas", "los Andes", "una novela", "Madrid"),
    "de": ("der Rhein", "die Berliner Mauer", "ein Buch", "das Rathaus", "1990"),
    "el": ("η Ακρόπολη", "ο Όλυμπος", "Αθήνα", "το 1821"),
    "ru": ("Москва", "река Волга", "Лев Толстой", "в 1961 году"),
    "tr": ("İstanbul", "Boğaziçi Köprüsü", "1923 yılında", "Ankara"),
    "ar": ("الكتاب الأحمر", "القاهرة", "نهر النيل", "مدينة بغداد"),
    "vi": ("của Hà Nội", "những con sông", "cái bàn gỗ", "Việt Nam"),
    "th": ("กรุงเทพมหานคร", "แม่น้ำเจ้าพระยา", "ประเทศไทย"),
    "zh": ("电化电池", "长江三角洲", "北京大学", "1949年", "iPhone手机"),
    "hi": ("भारत की राजधानी", "गंगा नदी", "महात्मा गांधी", "१९४७"),
    "bn": ("ঢাকা", "পদ্মা নদী", "রবীন্দ্রনাথ ঠাকুর"),
    "fi": ("Helsinki", "Suomenlahti", "Jean Sibelius"),
    "id": ("Jakarta", "Pulau Jawa", "Soekarno"),
    "ko": ("서울", "한강", "세종대왕"),
    "sw": ("Nairobi", "Mlima Kilimanjaro", "Ziwa Victoria"),
    "te": ("హైదరాబాద్", "గోదావరి నది", "తెలుగు భాష"),
}

# Decorations an answer may get (articles, punctuation: ASCII, CJK and other Unicode).
PREFIXES: dict[str, tuple[str, ...]] = {
    "en": ("the ", "a ", "An "),
    "es": ("el ", "la ", "unos "),
    "de": ("der ", "einem ", "Die "),
    "vi": ("của ", "những "),
    "ar": ("ال",),
}
SUFFIXES = (".", "!", "。", "，", "?", "»", "।", " -", " ...")


def _write(path: Path, text: str, newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline=newline) as handle:
        handle.write(text)


def _noisy(rng: random.Random, gold: str, choices: tuple[str, ...], error_rate: float) -> str:
    return rng.choice(choices) if rng.random() < error_rate else gold


def _lines_files(rng: random.Random, task: XtremeTask, language: str) -> tuple[str, str, str]:
    """(labels text, predictions text, newline) of a one-label-per-line task."""
    if task.name == "tatoeba":
        n = rng.randint(8, 20)
        gold = [str(rng.randrange(1000)) for _ in range(n)]
        pred = [g if rng.random() < 0.6 else str(rng.randrange(1000)) for g in gold]
    else:
        labels = ("0", "1") if task.name == "pawsx" else XNLI_LABELS
        n = rng.randint(5, 15)
        gold = [rng.choice(labels) for _ in range(n)]
        pred = [_noisy(rng, g, labels, 0.5) for g in gold]
    if rng.random() < 0.3:  # surrounding whitespace, stripped by the reference
        pred = [f" {p}\t" if i % 3 == 0 else p for i, p in enumerate(pred)]
    if rng.random() < 0.2:  # a blank line is an example like any other
        at = rng.randrange(len(gold))
        gold.insert(at, "")
        pred.insert(at, "" if rng.random() < 0.5 else "  ")
    newline = "\r\n" if rng.random() < 0.2 else "\n"
    end_gold = "" if rng.random() < 0.2 else "\n"
    return "\n".join(gold) + end_gold, "\n".join(pred) + "\n", newline


def _ner_sentence(rng: random.Random) -> list[str]:
    tags: list[str] = []
    while len(tags) < rng.randint(1, 12):
        if rng.random() < 0.6:
            tags.append("O")
            continue
        kind = rng.choice(NER_TYPES)
        tags += [f"B-{kind}"] + [f"I-{kind}"] * rng.choice((0, 0, 1, 2, 3))
    return tags


def _corrupt_ner(rng: random.Random, tags: list[str]) -> list[str]:
    out = []
    for tag in tags:
        roll = rng.random()
        if roll < 0.1:
            out.append("O")
        elif roll < 0.2:
            out.append(f"{rng.choice('BI')}-{rng.choice(NER_TYPES)}")  # I- alone, type changes
        else:
            out.append(tag)
    return out


def _tag_files(rng: random.Random, task: XtremeTask, language: str) -> tuple[str, str, str]:
    """(labels text, predictions text, newline) of a tagging task: sentences of tags."""
    if task.name == "panx":
        gold = [_ner_sentence(rng) for _ in range(rng.randint(2, 6))]
        pred = [_corrupt_ner(rng, sentence) for sentence in gold]
    else:
        gold = [[rng.choice(UPOS) for _ in range(rng.randint(1, 10))] for _ in range(3)]
        pred = [[_noisy(rng, t, tuple(UPOS), 0.3) for t in sentence] for sentence in gold]
    if rng.random() < 0.25:  # an empty sentence (two blank lines in a row) on both sides
        at = rng.randrange(len(gold))
        gold.insert(at, [])
        pred.insert(at, [])
    blocks_gold = ["\n".join(s) for s in gold]
    blocks_pred = ["\n".join(f"{t} " if rng.random() < 0.05 else t for t in s) for s in pred]
    gold_text = "\n\n".join(blocks_gold) + rng.choice(("\n", "\n\n", ""))
    pred_text = "\n\n".join(blocks_pred) + rng.choice(("\n", "\n\n", "\n   \n"))
    newline = "\r\n" if rng.random() < 0.15 else "\n"
    return gold_text, pred_text, newline


def _bucc_files(rng: random.Random, task: XtremeTask, language: str) -> tuple[str, str, str]:
    n = rng.randint(6, 15)
    gold = [
        f"{language}-{rng.randrange(10**6):09d}\ten-{rng.randrange(10**6):09d}" for _ in range(n)
    ]
    pred = []
    for pair in gold:
        roll = rng.random()
        if roll < 0.55:
            pred.append(pair)
        elif roll < 0.7:
            pred.append(pair.split("\t")[0] + f"\ten-{rng.randrange(10**6):09d}")
    pred += rng.sample(pred, min(2, len(pred)))  # duplicates count once
    pred.append(f"{language}-{rng.randrange(10**6):09d}\ten-{rng.randrange(10**6):09d}")
    if rng.random() < 0.5:
        pred.append(gold[0] + "\tpadding")  # three columns: never a match
    if rng.random() < 0.5:
        pred.append(gold[-1] + "\t")  # a trailing tab is stripped: a match
    if rng.random() < 0.5:
        pred.insert(1, "")  # a blank line is an empty "pair"
    rng.shuffle(pred)
    return "\n".join(gold) + "\n", "\n".join(pred) + "\n", "\n"


def _qa_answer(rng: random.Random, language: str, gold: str) -> str | None:
    """A prediction for gold answer ``gold``, or None (unanswered)."""
    roll = rng.random()
    if roll < 0.25:
        return gold
    if roll < 0.45:
        return rng.choice(PREFIXES.get(language, ("",))) + gold + rng.choice(SUFFIXES)
    if roll < 0.55:
        return gold.upper() + rng.choice(SUFFIXES)
    if roll < 0.7:  # partial overlap
        words = gold.split()
        return " ".join(words[: max(1, len(words) - 1)]) + " " + rng.choice(PHRASES[language])
    if roll < 0.8:
        return gold[: max(1, len(gold) // 2)]  # half the characters (CJK: some tokens)
    if roll < 0.9:
        return rng.choice(PHRASES[language])
    return None


def _qa_files(rng: random.Random, task: XtremeTask, language: str) -> tuple[str, str, str]:
    questions, predictions = [], {}
    for q in range(rng.randint(3, 8)):
        qid = f"{task.name}-{language}-{q:03d}"
        answers = rng.sample(PHRASES[language], rng.choice((1, 1, 2, 3)))
        if rng.random() < 0.2:
            answers.append(rng.choice(PREFIXES.get(language, ("",))) + answers[0] + "。")
        questions.append(
            {
                "answers": [{"answer_start": 0, "text": a} for a in answers],
                "id": qid,
                "question": f"Q{q}?",
            }
        )
        predicted = _qa_answer(rng, language, rng.choice(answers))
        if predicted is not None:
            predictions[qid] = predicted
    predictions[f"{task.name}-{language}-extra"] = "not asked"
    half = len(questions) // 2
    articles = [
        {"paragraphs": [{"context": "...", "qas": questions[:half]}], "title": "a"},
        {"paragraphs": [{"context": "...", "qas": questions[half:]}], "title": "b"},
    ]
    labels: object = {"data": articles, "version": "1.1"}
    if rng.random() < 0.2:
        labels = articles  # the reference also takes the bare list of articles
    wrapped: object = {"data": predictions} if rng.random() < 0.15 else predictions
    return (
        json.dumps(labels, ensure_ascii=rng.random() < 0.5, indent=1),
        json.dumps(wrapped, ensure_ascii=False),
        "\n",
    )


def write_random_cases(labels_dir: Path, predictions_dir: Path, seed: int = SEED) -> None:
    """Labels and one noisy submission for every language of every XTREME task."""
    rng = random.Random(seed)
    makers = {
        Scoring.ACCURACY: _lines_files,
        Scoring.SPAN_F1: _tag_files,
        Scoring.PAIR_F1: _bucc_files,
        Scoring.SQUAD: _qa_files,
        Scoring.MLQA: _qa_files,
    }
    for task in TASKS:
        for language in task.languages:
            gold, pred, newline = makers[task.scoring](rng, task, language)
            _write(task.path(labels_dir, language), gold, newline)
            _write(task.path(predictions_dir, language), pred, newline)


# Tasks of ``partial_submission``: the tagging group complete, classification and QA not.
PARTIAL_TASKS = ("pawsx", "panx", "udpos", "mlqa")


def partial_submission(predictions_dir: Path, out: Path) -> Path:
    """Some tasks of ``predictions_dir``, plus folders the reference ignores: a task that is not
    XTREME's and stray files."""
    for name in PARTIAL_TASKS:
        shutil.copytree(predictions_dir / name, out / name)
    _write(out / "mewslix" / "test-en.json", "{}")
    _write(out / "README.txt", "not a task\n")
    return out


EMPTY_TASKS = ("bucc2018", "xquad", "mlqa", "tydiqa")


def empty_submission(out: Path) -> Path:
    """Nothing predicted where the reference allows it: empty BUCC pair files (F1 0) and QA
    files ``{}`` (every question unanswered)."""
    for task in TASKS:
        if task.name in EMPTY_TASKS:
            for language in task.languages:
                _write(task.path(out, language), "{}" if task.scoring.suffix == "json" else "")
    return out


def perfect_submission(labels_dir: Path, out: Path) -> Path:
    """Every task predicted exactly: label files copied, QA answered with the first gold text."""
    for task in TASKS:
        for language in task.languages:
            source, target = task.path(labels_dir, language), task.path(out, language)
            target.parent.mkdir(parents=True, exist_ok=True)
            if task.scoring.suffix == "tsv":
                shutil.copyfile(source, target)
                continue
            payload = json.loads(source.read_text(encoding="utf-8"))
            articles = payload["data"] if isinstance(payload, dict) else payload
            answers = {
                qa["id"]: qa["answers"][0]["text"]
                for article in articles
                for paragraph in article["paragraphs"]
                for qa in paragraph["qas"]
            }
            _write(target, json.dumps(answers, ensure_ascii=False))
    return out
