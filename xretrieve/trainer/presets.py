"""Field-name presets of the common public training-data releases (MultiNLI, XNLI, ANLI, ANLI+,
QQP, PAWS-X, HellaSwag, Cosmos QA, CommonsenseQA, SQuAD, CCG, CoNLL, UD-POS, PAN-X, image-text,
MLM): which fields of a record hold what, and the label order. Used by the configuration (a task's
``preset``) and by the readers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xretrieve.trainer.task_type import TaskType

FieldMap = Mapping[str, str | tuple[str, ...]]


@dataclass(frozen=True)
class Preset:
    """Field names (dotted paths into each record) and labels of a public release. ``layouts``
    are further field layouts of the same data (the Hugging Face export, the GLUE TSV); per file
    the first layout whose fields the first record has is used. ``label_aliases`` map other
    releases' names onto ``labels`` (ANLI's ``e`` is MNLI's ``entailment``); ``skip_labels`` mark
    pairs without a gold label (MNLI's ``-``, Hugging Face's ``-1``). ``headerless`` names the
    columns of a TSV without a header row (XTREME's ``text_a<TAB>text_b<TAB>label``, written by
    ``csv.writer``, so read with its quoting), used when the first row is no header."""

    type: TaskType
    fields: FieldMap
    labels: tuple[str, ...] | None = None
    skip_labels: tuple[str, ...] = ()
    format: str = "jsonl"
    allow_unanswerable: bool = False
    layouts: tuple[FieldMap, ...] = ()
    label_aliases: Mapping[str, str] = field(default_factory=dict)
    headerless: tuple[str, ...] = ()


_HF_NLI = {"text_a": "premise", "text_b": "hypothesis", "label": "label"}
_MNLI = {"text_a": "sentence1", "text_b": "sentence2", "label": "gold_label"}
_NLI_LABELS = ("entailment", "neutral", "contradiction")

# Universal POS tags in the order of the Hugging Face ``google/xtreme`` udpos configs' ``pos_tags``
# ClassLabel (alphabetical, as XTREME's own labels.txt sorts them).
UPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip
# WikiANN / PAN-X tags in the order of the Hugging Face ``ner_tags`` ClassLabel (``google/xtreme``
# PAN-X.* and ``wikiann``).
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

PRESETS: dict[str, Preset] = {
    # MultiNLI 1.0 release (multinli_1.0_*.jsonl) and GLUE's MNLI TSV (train.tsv, dev_matched.tsv:
    # the same column names); "-" marks pairs without annotator consensus. Hugging Face glue/mnli:
    # premise, hypothesis, integer label in the same order.
    "mnli": Preset(
        TaskType.PAIR_CLASSIFICATION,
        _MNLI,
        _NLI_LABELS,
        skip_labels=("-",),
        layouts=(_HF_NLI,),
    ),
    # XNLI: Hugging Face facebook/xnli (premise, hypothesis, integer label; the all_languages
    # config holds every language in each record), the official XNLI-1.0 xnli.{dev,test}.tsv and
    # the google/xtreme XNLI export (language, sentence1, sentence2, gold_label: every language
    # in one file, so a task names its ``language``), XNLI-MT's multinli.train.LANG.tsv
    # (premise, hypo, label with "contradictory") and XTREME's headerless xnli/{train,dev}-LANG.tsv.
    "xnli": Preset(
        TaskType.PAIR_CLASSIFICATION,
        _HF_NLI,
        _NLI_LABELS,
        layouts=(_MNLI, {"text_a": "premise", "text_b": "hypo", "label": "label"}),
        label_aliases={"contradictory": "contradiction"},
        headerless=("premise", "hypothesis", "label"),
    ),
    # ANLI release (anli_v1.0/R1..R3/train.jsonl, dev.jsonl): labels "e", "n", "c". Hugging Face
    # facebook/anli: premise, hypothesis, integer label (0 entailment, 1 neutral, 2 contradiction).
    "anli": Preset(
        TaskType.PAIR_CLASSIFICATION,
        {"text_a": "context", "text_b": "hypothesis", "label": "label"},
        ("e", "n", "c"),
        layouts=(_HF_NLI,),
    ),
    # ANLI+ (Nie et al. 2020): the ANLI rounds with MNLI and SNLI in one task and one label
    # vocabulary: ANLI's e/n/c, MNLI/SNLI's words (and XNLI-MT's "contradictory") and Hugging
    # Face's integers all name entailment, neutral, contradiction. Pairs without a gold label
    # (MNLI/SNLI "-", Hugging Face snli's -1) are skipped.
    "anli_plus": Preset(
        TaskType.PAIR_CLASSIFICATION,
        {"text_a": "context", "text_b": "hypothesis", "label": "label"},
        _NLI_LABELS,
        skip_labels=("-", "-1"),
        layouts=(_MNLI, _HF_NLI),
        label_aliases={
            "e": "entailment",
            "n": "neutral",
            "c": "contradiction",
            "contradictory": "contradiction",
        },
    ),
    # QQP: Hugging Face glue/qqp (label 1 = duplicate) or GLUE's TSV (is_duplicate column).
    "qqp": Preset(
        TaskType.PAIR_CLASSIFICATION,
        {"text_a": "question1", "text_b": "question2", "label": "label"},
        ("0", "1"),
        layouts=({"text_a": "question1", "text_b": "question2", "label": "is_duplicate"},),
    ),
    # PAWS-X: the release's x-final/LANG/{train,dev_2k,test_2k}.tsv (id, sentence1, sentence2,
    # label), the google/xtreme PAWS-X.LANG export (same names) and XTREME's headerless
    # pawsx/{train,dev}-LANG.tsv.
    "pawsx": Preset(
        TaskType.PAIR_CLASSIFICATION,
        {"text_a": "sentence1", "text_b": "sentence2", "label": "label"},
        ("0", "1"),
        headerless=("sentence1", "sentence2", "label"),
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
    # UD-POS: XTREME's udpos/{train,dev}-LANG.tsv (word<TAB>tag), raw UD .conllu (FORM, UPOS)
    # and the google/xtreme udpos.* export (tokens, integer pos_tags).
    "udpos": Preset(
        TaskType.TAGGING,
        {"words": "0", "tags": "-1"},
        UPOS_TAGS,
        format="conll",
        layouts=({"words": "tokens", "tags": "pos_tags"},),
    ),
    # PAN-X / WikiANN NER: XTREME's panx/{train,dev}-LANG.tsv, the raw release (LANG:token<TAB>
    # tag, the prefix removed) and the google/xtreme PAN-X.* / wikiann export (tokens, integer
    # ner_tags, langs).
    "panx": Preset(
        TaskType.TAGGING,
        {"words": "0", "tags": "-1"},
        PANX_TAGS,
        format="conll",
        layouts=({"words": "tokens", "tags": "ner_tags"},),
    ),
    # The image-text layout of xretrieve.formats.image_text (IGLUE's {"id", "sentences"} lines
    # are read too): a caption and the id of its image, a line of the gallery's image_ids.txt.
    "image_text": Preset(TaskType.IMAGE_TEXT, {"caption": "caption", "image_id": "image_id"}),
    # Plain text, one passage per line (a .jsonl file uses the "text" field).
    "mlm": Preset(TaskType.MLM, {"text": "text"}, format="text"),
}
