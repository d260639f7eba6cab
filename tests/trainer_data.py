"""Tiny generated data for every trainer task type, learnable by a tiny random encoder in a few
dozen steps. Each writer returns the ``[[tasks]]`` entry (a dict) that trains on the files;
``run_config`` wraps such entries into a small run's config (a dict for ``config_from_dict``,
or ``write_config`` for the CLI)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

# Words the tiny test tokenizers know as whole tokens.
NOUNS = ["cat", "dog", "house", "tree", "water", "city", "river", "book", "car", "sun", "moon"]
ADJECTIVES = ["small", "big", "red", "green"]
FUNCTION = ["the", "of", "and", "to", "in", "is", "on", "with"]
TAG_OF = {**{w: "N" for w in NOUNS}, **{w: "A" for w in ADJECTIVES}, **{w: "F" for w in FUNCTION}}


RUN_DEFAULTS: dict = {
    "max_length": 32,
    "seed": 0,
    "optim": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3},
    "evaluation": {"eval_every": 1000, "log_every": 1},
}


def with_overrides(raw: dict, overrides: dict) -> dict:
    """``raw`` with ``overrides`` applied: a dict value updates that section key by key, any
    other value replaces the key. Returns a new dict; ``raw``'s sections are not modified."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    for key, value in overrides.items():
        if isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def run_config(base: Path, output_dir: Path, tasks: list[dict], **overrides) -> dict:
    """A small training run of ``tasks`` from the checkpoint ``base`` into ``output_dir``:
    ``RUN_DEFAULTS`` (32 tokens, 2 steps of 8, no evaluation before the last step) with
    ``overrides`` as in ``with_overrides``, e.g. ``optim={"max_steps": 6}``."""
    raw = {"base": str(base), "output_dir": str(output_dir), **RUN_DEFAULTS, "tasks": tasks}
    return with_overrides(raw, overrides)


def write_config(path: Path, raw: dict) -> Path:
    """``raw`` written for ``xretrieve train`` (JSON, which is YAML: give ``path`` a ``.yaml``)."""
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def pair_records(n: int, rng: random.Random) -> list[dict]:
    """Entailment iff the two sentences share a noun."""
    records = []
    for i in range(n):
        a = rng.sample(NOUNS, 2)
        if i % 2 == 0:
            b = [a[rng.randrange(2)], rng.choice([w for w in NOUNS if w not in a])]
            label = "entailment"
        else:
            b = rng.sample([w for w in NOUNS if w not in a], 2)
            label = "contradiction"
        rng.shuffle(b)
        records.append({"sentence1": " ".join(a), "sentence2": " ".join(b), "gold_label": label})
    return records


def write_pair_task(directory: Path, n_train: int = 64, n_val: int = 32, seed: int = 0) -> dict:
    rng = random.Random(seed)
    train = _write_jsonl(directory / "pair_train.jsonl", pair_records(n_train, rng))
    val = _write_jsonl(directory / "pair_val.jsonl", pair_records(n_val, rng))
    return {"name": "pairs", "preset": "mnli", "train": str(train), "validation": str(val)}


def choice_records(n: int, rng: random.Random) -> list[dict]:
    """The right ending repeats the context's noun (HellaSwag field names)."""
    records = []
    for _ in range(n):
        word = rng.choice(NOUNS)
        others = rng.sample([w for w in NOUNS if w != word], 3)
        label = rng.randrange(4)
        endings = [f"{w} {w}" for w in others]
        endings.insert(label, f"{word} {word}")
        records.append({"ctx": f"the {word}", "endings": endings, "label": label})
    return records


def write_choice_task(directory: Path, n_train: int = 48, n_val: int = 24, seed: int = 1) -> dict:
    rng = random.Random(seed)
    train = _write_jsonl(directory / "mc_train.jsonl", choice_records(n_train, rng))
    val = _write_jsonl(directory / "mc_val.jsonl", choice_records(n_val, rng))
    return {"name": "choice", "preset": "hellaswag", "train": str(train), "validation": str(val)}


def qa_records(n: int, rng: random.Random, unanswerable_every: int = 0) -> list[dict]:
    """The answer is the noun right after "red"; without "red" the question is unanswerable."""
    records = []
    for i in range(n):
        words = [rng.choice(NOUNS + FUNCTION) for _ in range(rng.randint(6, 14))]
        answers = {"text": [], "answer_start": []}
        if not (unanswerable_every and i % unanswerable_every == 0):
            position = rng.randrange(len(words))
            answer = rng.choice(NOUNS)
            words[position : position + 1] = ["red", answer]
            start = len(" ".join(words[: position + 1])) + 1
            answers = {"text": [answer], "answer_start": [start]}
        records.append(
            {
                "id": f"q{i}",
                "question": "what is red",
                "context": " ".join(words),
                "answers": answers,
            }
        )
    return records


def write_qa_task(
    directory: Path, n_train: int = 64, n_val: int = 24, seed: int = 2, v2: bool = False
) -> dict:
    rng = random.Random(seed)
    every = 4 if v2 else 0
    train = _write_jsonl(directory / "qa_train.jsonl", qa_records(n_train, rng, every))
    val = _write_jsonl(directory / "qa_val.jsonl", qa_records(n_val, rng, every))
    preset = "squad_v2" if v2 else "squad"
    return {"name": preset, "preset": preset, "train": str(train), "validation": str(val)}


def tag_records(n: int, rng: random.Random) -> list[dict]:
    """The tag is a function of the word (N, A or F), CCG field names."""
    records = []
    for _ in range(n):
        words = [rng.choice(NOUNS + ADJECTIVES + FUNCTION) for _ in range(rng.randint(3, 8))]
        records.append({"tokens": words, "tags": [TAG_OF[w] for w in words]})
    return records


def write_tag_task(directory: Path, n_train: int = 48, n_val: int = 16, seed: int = 3) -> dict:
    rng = random.Random(seed)
    train = _write_jsonl(directory / "tag_train.jsonl", tag_records(n_train, rng))
    val = _write_jsonl(directory / "tag_val.jsonl", tag_records(n_val, rng))
    return {"name": "ccg", "preset": "ccg", "train": str(train), "validation": str(val)}


def write_image_text_task(
    directory: Path, n_images: int = 8, dim: int = 12, captions_per_image: int = 3, seed: int = 4
) -> dict:
    """Image i is a random vector; its captions name noun i (plus filler words). The image-text
    layout: ``images.npy``, ``image_ids.txt``, captions naming their image by id."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(seed).standard_normal((n_images, dim)).astype(np.float32)
    np.save(directory / "images.npy", images)
    ids = [f"img{image}" for image in range(n_images)]
    (directory / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    train, val = [], []
    for image in range(n_images):
        for k in range(captions_per_image + 1):
            caption = f"{rng.choice(FUNCTION)} {NOUNS[image]} {rng.choice(FUNCTION)}"
            record = {"caption": caption, "image_id": ids[image]}
            (val if k == captions_per_image else train).append(record)
    return {
        "name": "image_text",
        "preset": "image_text",
        "train": str(_write_jsonl(directory / "captions.en.train.jsonl", train)),
        "validation": str(_write_jsonl(directory / "captions.en.dev.jsonl", val)),
    }


def write_mlm_task(directory: Path, n_train: int = 64, n_val: int = 16, seed: int = 5) -> dict:
    rng = random.Random(seed)

    def lines(n: int) -> str:
        return "".join(f"the {rng.choice(NOUNS)} is {rng.choice(ADJECTIVES)}\n" for _ in range(n))

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mlm_train.txt").write_text(lines(n_train), encoding="utf-8")
    (directory / "mlm_val.txt").write_text(lines(n_val), encoding="utf-8")
    return {
        "name": "mlm",
        "preset": "mlm",
        "train": str(directory / "mlm_train.txt"),
        "validation": str(directory / "mlm_val.txt"),
    }


WRITERS = {
    "pair_classification": write_pair_task,
    "multiple_choice": write_choice_task,
    "extractive_qa": write_qa_task,
    "tagging": write_tag_task,
    "image_text": write_image_text_task,
    "mlm": write_mlm_task,
}
