"""Field-name presets of the common public training-data releases (MultiNLI, XNLI, ANLI, QQP,
HellaSwag, Cosmos QA, CommonsenseQA, SQuAD, CCG, CoNLL, image-text, MLM): which fields of a
record hold what, and the label order. Used by the configuration (a task's ``preset``) and by the
readers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xretrieve.trainer.task_type import TaskType

FieldMap = Mapping[str, str | tuple[str, ...]]


@dataclass(frozen=True)
class Preset:
    """Field names (dotted paths into each record) and labels of a public release. ``layouts``
    are further field layouts of the same data (the Hugging Face export, the GLUE TSV); per file
    the first layout whose fields the first record has is used."""

    type: TaskType
    fields: FieldMap
    labels: tuple[str, ...] | None = None
    skip_labels: tuple[str, ...] = ()
    format: str = "jsonl"
    allow_unanswerable: bool = False
    layouts: tuple[FieldMap, ...] = ()


_HF_NLI = {"text_a": "premise", "text_b": "hypothesis", "label": "label"}

PRESETS: dict[str, Preset] = {
    # MultiNLI 1.0 release (multinli_1.0_*.jsonl) and GLUE's MNLI TSV (train.tsv, dev_matched.tsv:
    # the same column names); "-" marks pairs without annotator consensus. Hugging Face glue/mnli:
    # premise, hypothesis, integer label in the same order.
    "mnli": Preset(
        TaskType.PAIR_CLASSIFICATION,
        {"text_a": "sentence1", "text_b": "sentence2", "label": "gold_label"},
        ("entailment", "neutral", "contradiction"),
        skip_labels=("-",),
        layouts=(_HF_NLI,),
    ),
    # XNLI / MNLI as exported by Hugging Face datasets: integer labels in this order.
    "xnli": Preset(
        TaskType.PAIR_CLASSIFICATION,
        {"text_a": "premise", "text_b": "hypothesis", "label": "label"},
        ("entailment", "neutral", "contradiction"),
    ),
    # ANLI release (anli_v1.0/R1..R3/train.jsonl, dev.jsonl): labels "e", "n", "c". Hugging Face
    # facebook/anli: premise, hypothesis, integer label (0 entailment, 1 neutral, 2 contradiction).
    "anli": Preset(
        TaskType.PAIR_CLASSIFICATION,
        {"text_a": "context", "text_b": "hypothesis", "label": "label"},
        ("e", "n", "c"),
        layouts=(_HF_NLI,),
    ),
    # QQP: Hugging Face glue/qqp (label 1 = duplicate) or GLUE's TSV (is_duplicate column).
    "qqp": Preset(
        TaskType.PAIR_CLASSIFICATION,
        {"text_a": "question1", "text_b": "question2", "label": "label"},
        ("0", "1"),
        layouts=({"text_a": "question1", "text_b": "question2", "label": "is_duplicate"},),
    ),
    # HellaSwag release (hellaswag_train.jsonl): ctx, four endings, integer label.
    "hellaswag": Preset(
        TaskType.MULTIPLE_CHOICE, {"context": "ctx", "choices": "endings", "label": "label"}
    ),
    # Cosmos QA release (train.csv, valid.csv, or the .jsonl files): context, question,
    # answer0..answer3, label (the right answer's index).
    "cosmosqa": Preset(
        TaskType.MULTIPLE_CHOICE,
        {
            "context": "context",
            "question": "question",
            "choices": ("answer0", "answer1", "answer2", "answer3"),
            "label": "label",
        },
    ),
    # CommonsenseQA release (train_rand_split.jsonl): choices are [{label, text}], answerKey a
    # letter. Hugging Face tau/commonsense_qa: question a string, choices {label: [], text: []}.
    "commonsenseqa": Preset(
        TaskType.MULTIPLE_CHOICE,
        {"question": "question.stem", "choices": "question.choices", "label": "answerKey"},
        layouts=({"question": "question", "choices": "choices", "label": "answerKey"},),
    ),
    # SQuAD v1.1 / v2.0: the official nested JSON, or one question per line (HF export).
    "squad": Preset(
        TaskType.EXTRACTIVE_QA,
        {"id": "id", "question": "question", "context": "context", "answers": "answers"},
        format="squad",
    ),
    "squad_v2": Preset(
        TaskType.EXTRACTIVE_QA,
        {"id": "id", "question": "question", "context": "context", "answers": "answers"},
        format="squad",
        allow_unanswerable=True,
    ),
    # CCG supertagging: JSON Lines with tokens and supertags (lists or space-separated strings),
    # jiant's "text<TAB>tags" TSV (ccg.train, ccg.dev), or CCGbank AUTO files (wsj_*.auto).
    "ccg": Preset(TaskType.TAGGING, {"words": "tokens", "tags": "tags"}),
    # CoNLL-style columns: word first, tag last, blank line between sentences.
    "conll": Preset(TaskType.TAGGING, {"words": "0", "tags": "-1"}, format="conll"),
    "image_text": Preset(TaskType.IMAGE_TEXT, {"caption": "caption", "image": "image"}),
    # Plain text, one passage per line (a .jsonl file uses the "text" field).
    "mlm": Preset(TaskType.MLM, {"text": "text"}, format="text"),
}
