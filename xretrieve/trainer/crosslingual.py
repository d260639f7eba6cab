"""Zero-shot cross-lingual evaluation of a target task: the task trains on English and is scored
on each language's validation file (XNLI, PAWS-X, XQuAD / MLQA / TyDiQA-GoldP, POS / NER), as in
XTREME and Phang et al. 2020. Metrics per language, their mean, and the mean of each resource
group of ``xretrieve evaluate`` (Joshi et al. classes, ``xretrieve.evaluation.resources``)."""

from __future__ import annotations

from typing import Any

import numpy as np

# ISO 639-1 codes of the XTREME languages, for looking up their resource class (the class table
# is keyed by ISO 639-3 codes, as XTREME's Tatoeba file names; XNLI, PAWS-X, XQuAD, MLQA,
# TyDiQA and the UD / WikiANN files use ISO 639-1).
ISO_639_3 = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "en": "eng",
    "es": "spa", "et": "est", "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb",
    "hi": "hin", "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat",
    "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar", "nl": "nld", "pt": "por", "ru": "rus",
    "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl", "tr": "tur", "ur": "urd",
    "vi": "vie", "zh": "cmn",
}  # fmt: skip


def language_group(lang: str) -> str:
    """``high`` / ``medium`` / ``low`` / ``unknown`` of ``lang`` (ISO 639-1 or 639-3)."""
    from xretrieve.evaluation.resources import UNKNOWN, resource_group

    group = resource_group(lang)
    if group == UNKNOWN and lang in ISO_639_3:
        group = resource_group(ISO_639_3[lang])
    return group


def evaluate_languages(task: Any, encoder: Any, run: Any) -> dict[str, float]:
    """``TASK/LANG/METRIC`` for every language and metric, ``TASK/METRIC`` the mean over the
    languages and ``TASK/GROUP/METRIC`` the mean within each resource group (groups in
    ``high, medium, low, unknown`` order)."""
    from xretrieve.evaluation.resources import ordered_groups

    per_language: dict[str, dict[str, float]] = {}
    for lang in task.languages:
        task.use_language(lang)
        per_language[lang] = {
            name: float(value) for name, value in task.evaluate(encoder, run).items()
        }
    metrics: dict[str, float] = {}
    for lang, values in per_language.items():
        for name, value in values.items():
            metrics[f"{task.name}/{lang}/{name}"] = value
    names = sorted({name for values in per_language.values() for name in values})
    groups: dict[str, list[str]] = {}
    for lang in per_language:
        groups.setdefault(language_group(lang), []).append(lang)
    for name in names:
        scored = [lang for lang in per_language if name in per_language[lang]]
        metrics[f"{task.name}/{name}"] = float(np.mean([per_language[x][name] for x in scored]))
        for group in ordered_groups(groups):
            members = [lang for lang in groups[group] if name in per_language[lang]]
            if members:
                metrics[f"{task.name}/{group}/{name}"] = float(
                    np.mean([per_language[x][name] for x in members])
                )
    return metrics
