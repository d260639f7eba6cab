"""A tiny XTREME download for every language of all nine tasks, written the way XTREME's
``download_data.sh`` and ``utils_preprocess.py`` leave it (and, for test splits with labels, as
Hugging Face ``google/xtreme`` exports beside them, which keep their labels), plus LASER's
aligned Tatoeba files. A few examples per language: enough to fine-tune a tiny model for a few
steps, predict every language and score it. Also the small writers the data tests use, and a
tiny image-text folder (``write_image_text``, the ``xflickrco`` task's layout)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np

from xretrieve.trainer.crosslingual import ISO_639_3
from xretrieve.trainer.presets import PANX_TAGS, UPOS_TAGS
from xretrieve.xtreme.tasks import task_by_name

WORDS = (
    "the cat dog house tree water city river book car sun moon day night small big red green "
    "der die und das mit haus le la les est un une chat"
).split()
NLI = ("entailment", "neutral", "contradiction")
TYDI_NAMES = {
    "ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish", "id": "indonesian",
    "ko": "korean", "ru": "russian", "sw": "swahili", "te": "telugu",
}  # fmt: skip
TYDI_TRAIN = "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json"
MLQA = "mlqa/MLQA_V1/{split}/{split}-context-{lang}-question-{lang}.json"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tsv(path: Path, rows: list[list[str]]) -> Path:
    """As utils_preprocess.py writes xnli and pawsx files: csv.writer with a tab."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter="\t").writerows(rows)
    return path


def tagged(path: Path, sentences: list[list[tuple[str, str]]], test: bool) -> Path:
    """As udpos_preprocess's _write_files writes a .tsv: word<TAB>tag (a test file: the word
    only), a blank line after each sentence."""
    out = []
    for sentence in sentences:
        for word, tag in sentence:
            out.append(word if test else f"{word}\t{tag}")
        out.append("")
    return write(path, "\n".join(out) + "\n")


def jsonl(path: Path, records: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def squad(path: Path, items: list[tuple[str, str, str, str | None]]) -> Path:
    """SQuAD v1.1 JSON; an answer None is XTREME's remove_qa_test_annotations (one paragraph
    per question, answer '' at 0)."""
    data = []
    for qid, question, context, answer in items:
        if answer is None:
            answers = [{"answer_start": 0, "text": ""}]
        else:
            answers = [{"answer_start": context.index(answer), "text": answer}]
        qa = {"answers": answers, "question": question, "id": qid}
        data.append({"paragraphs": [{"context": context, "qas": [qa]}]})
    return write(path, json.dumps({"version": "1.1", "data": data}))


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _pairs(rng: random.Random, n: int, labels: tuple[str, ...]) -> list[list[str]]:
    return [[_sentence(rng, 5), _sentence(rng, 4), rng.choice(labels)] for _ in range(n)]


def _tags(rng: random.Random, n: int, tags: tuple[str, ...]) -> list[list[tuple[str, str]]]:
    return [
        [(rng.choice(WORDS), rng.choice(tags)) for _ in range(rng.randint(2, 6))] for _ in range(n)
    ]


def _questions(rng: random.Random, n: int, prefix: str) -> list[tuple[str, str, str, str]]:
    items = []
    for i in range(n):
        context = _sentence(rng, 12) + "."
        answer = context.split()[rng.randrange(10)]
        items.append((f"{prefix}-{i}", f"what {rng.choice(WORDS)}?", context, answer))
    return items


def _hf_qa(items: list[tuple[str, str, str, str]]) -> list[dict]:
    return [
        {
            "id": qid,
            "title": "",
            "context": context,
            "question": question,
            "answers": {"answer_start": [context.index(answer)], "text": [answer]},
        }
        for qid, question, context, answer in items
    ]


def write_xtreme(root: Path, *, labelled_test: bool = True, n: int = 4, seed: int = 0) -> Path:
    """Every file of the nine XTREME tasks for every language under ``root``: English training
    files of 16 examples, ``n`` examples per language and split. ``labelled_test``: the test
    splits as Hugging Face exports with their labels (and BUCC's test gold), else XTREME's own
    test files, whose labels are stripped."""
    rng = random.Random(seed)
    langs = {task: task_by_name(task).languages for task in ("xnli", "pawsx", "udpos", "panx")}
    for task, labels in (("xnli", NLI), ("pawsx", ("0", "1"))):
        tsv(root / f"{task}/train-en.tsv", _pairs(rng, 16, labels))
        for lang in langs[task]:
            tsv(root / f"{task}/dev-{lang}.tsv", _pairs(rng, n, labels))
            rows = _pairs(rng, n, labels)
            if labelled_test:
                key = "gold_label" if task == "xnli" else "label"
                records = [{"sentence1": a, "sentence2": b, key: label} for a, b, label in rows]
                jsonl(root / f"{task}/test-{lang}.jsonl", records)
            else:
                tsv(root / f"{task}/test-{lang}.tsv", [[a, b] for a, b, _ in rows])
    for task, tags, field in (("udpos", UPOS_TAGS, "pos_tags"), ("panx", PANX_TAGS, "ner_tags")):
        tagged(root / f"{task}/train-en.tsv", _tags(rng, 16, tags), False)
        for lang in langs[task]:
            tagged(root / f"{task}/dev-{lang}.tsv", _tags(rng, n, tags), False)
            sentences = _tags(rng, n, tags)
            if labelled_test:
                records = [
                    {"tokens": [w for w, _ in s], field: [tags.index(t) for _, t in s]}
                    for s in sentences
                ]
                jsonl(root / f"{task}/test-{lang}.jsonl", records)
            else:
                tagged(root / f"{task}/test-{lang}.tsv", sentences, True)
    _write_qa(root, rng, n, labelled_test)
    _write_retrieval(root, rng, n, labelled_test)
    return root


def _write_qa(root: Path, rng: random.Random, n: int, labelled_test: bool) -> None:
    squad(root / "squad/train-v1.1.json", _questions(rng, 16, "sq"))
    squad(root / "squad/dev-v1.1.json", _questions(rng, n, "sqd"))
    squad(root / TYDI_TRAIN, _questions(rng, 16, "ty"))
    for lang in task_by_name("mlqa").languages:
        squad(root / MLQA.format(split="dev", lang=lang), _questions(rng, n, f"mlqa-dev-{lang}"))
    tests = {
        "xquad": ("xquad/xquad.{lang}.json", lambda lang: f"xq-{lang}"),
        "mlqa": (MLQA.replace("{split}", "test"), lambda lang: f"mlqa-test-{lang}"),
        "tydiqa": (
            "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json",
            lambda lang: f"{TYDI_NAMES[lang]}-{lang}",
        ),
    }
    for task, (pattern, prefix) in tests.items():
        for lang in task_by_name(task).languages:
            items = _questions(rng, n, prefix(lang))
            path = root / pattern.format(lang=lang)
            if labelled_test:
                jsonl(path.with_suffix(".jsonl"), _hf_qa(items))
            else:
                squad(path, [(q, question, c, None) for q, question, c, _ in items])


def _write_retrieval(root: Path, rng: random.Random, n: int, labelled_test: bool) -> None:
    for lang in task_by_name("bucc2018").languages:
        for split in ("dev", "test"):
            stem = root / f"bucc2018/{lang}-en.{split}"
            count = 2 * n
            src = [f"{lang}-{split}-{i:06d}\t{_sentence(rng, 5)}" for i in range(count)]
            tgt = [f"en-{split}-{i:06d}\t{_sentence(rng, 5)}" for i in range(count)]
            write(stem.with_name(f"{stem.name}.{lang}"), "\n".join(src) + "\n")
            write(stem.with_name(f"{stem.name}.en"), "\n".join(tgt) + "\n")
            if split == "dev" or labelled_test:
                gold = [f"{lang}-{split}-{i:06d}\ten-{split}-{i:06d}" for i in range(0, count, 2)]
                write(stem.with_name(f"{stem.name}.gold"), "\n".join(gold) + "\n")
    for lang in task_by_name("tatoeba").languages:
        src = [_sentence(rng, 4) for _ in range(n)]
        eng = [_sentence(rng, 4) for _ in range(n)]
        if labelled_test:
            iso = ISO_639_3[lang]
            write(root / f"tatoeba/tatoeba.{iso}-eng.{iso}", "\n".join(src) + "\n")
            write(root / f"tatoeba/tatoeba.{iso}-eng.eng", "\n".join(eng) + "\n")
        else:
            write(root / f"tatoeba/{lang}-en.{lang}", "\n".join(src) + "\n")
            write(root / f"tatoeba/{lang}-en.en", "\n".join(sorted(eng)) + "\n")


# What every fine-tuned task of a test run trains with: a few steps of a tiny model.
TINY_CONFIG = """
[fine_tuning]
epochs = 1
batch_size = 8
grad_accum = 1
learning_rate = 1e-3
max_length = 64
eval_every = 1
max_eval_examples = "none"
eval_batch_size = 16

[retrieval]
backend = "torch"
"""


def write_config(path: Path, extra: str = "") -> Path:
    return write(path, TINY_CONFIG + extra)


IMAGE_NOUNS = ["cat", "dog", "house", "tree", "water", "city", "river", "book"]
# Test languages and the filler word of their captions (words the tiny tokenizer knows): one per
# resource group, so that every group is reported.
IMAGE_TEST_FILLERS = {"de": "der", "ta": "la", "sw": ""}


def write_captions(base: Path, name: str, rows: list) -> Path:
    """A caption file: ``(image_id, caption)`` tuples, other records and raw lines as given."""
    records = [
        {"image_id": row[0], "caption": row[1]} if isinstance(row, tuple) else row for row in rows
    ]
    lines = [row if isinstance(row, str) else json.dumps(row) for row in records]
    return write(base / name, "".join(line + "\n" for line in lines))


def write_image_text(data: Path, n_distractors: int = 2) -> Path:
    """``data/image_text/``: image k (a random vector) is captioned with noun k in every
    language, with a filler word of the language; the gallery also holds images no caption
    names. English train and dev captions, test captions in ``IMAGE_TEST_FILLERS``' languages."""
    base = data / "image_text"
    base.mkdir(parents=True, exist_ok=True)
    n_images = len(IMAGE_NOUNS) + n_distractors
    rng = np.random.default_rng(0)
    np.save(base / "images.npy", rng.standard_normal((n_images, 16)).astype(np.float32))
    ids = [f"flickr{k}" for k in range(n_images)]
    write(base / "image_ids.txt", "".join(f"{i}\n" for i in ids))
    train = [
        (ids[k], f"{filler} {noun}")
        for k, noun in enumerate(IMAGE_NOUNS)
        for filler in ("the", "a", "of")
    ]
    write_captions(base, "captions.en.train.jsonl", train)
    dev = [(ids[k], f"the {noun}") for k, noun in enumerate(IMAGE_NOUNS)]
    write_captions(base, "captions.en.dev.jsonl", dev)
    for lang, filler in IMAGE_TEST_FILLERS.items():
        rows = [(ids[k], f"{filler} {noun}".strip()) for k, noun in enumerate(IMAGE_NOUNS)]
        write_captions(base, f"captions.{lang}.test.jsonl", rows)
    return data
