"""``TaskType``: the kinds of training task, shared by the configuration and the presets."""

from __future__ import annotations

import enum


class TaskType(str, enum.Enum):
    """The head a task puts on the shared encoder."""

    PAIR_CLASSIFICATION = "pair_classification"
    MULTIPLE_CHOICE = "multiple_choice"
    EXTRACTIVE_QA = "extractive_qa"
    TAGGING = "tagging"
    IMAGE_TEXT = "image_text"
    MLM = "mlm"
