"""One module per task type: head, featurisation and collation, loss, metrics."""

from __future__ import annotations

from xretrieve.trainer.config import TaskConfig, TaskType
from xretrieve.trainer.readers import read_task_file, read_train_files, task_labels
from xretrieve.trainer.tasks.base import RunContext, Task, TextSettings
from xretrieve.trainer.tasks.classification import PairClassificationTask
from xretrieve.trainer.tasks.image_text import ImageTextTask
from xretrieve.trainer.tasks.mlm import MLMTask
from xretrieve.trainer.tasks.multiple_choice import MultipleChoiceTask
from xretrieve.trainer.tasks.qa import ExtractiveQATask
from xretrieve.trainer.tasks.tagging import TaggingTask

TASK_CLASSES: dict[TaskType, type[Task]] = {
    TaskType.PAIR_CLASSIFICATION: PairClassificationTask,
    TaskType.MULTIPLE_CHOICE: MultipleChoiceTask,
    TaskType.EXTRACTIVE_QA: ExtractiveQATask,
    TaskType.TAGGING: TaggingTask,
    TaskType.IMAGE_TEXT: ImageTextTask,
    TaskType.MLM: MLMTask,
}


def build_task(config: TaskConfig, text: TextSettings) -> Task:
    """Read the task's files, featurise them and create its (freshly initialised) head."""
    labels = task_labels(config)
    train = read_train_files(config, labels)
    validation = None
    if config.validation is not None:
        # Tagging with labels inferred from training data tolerates new tags in validation (they
        # count as errors); everywhere else the validation labels must be the training labels.
        eval_labels = train.labels or None
        if config.type is TaskType.TAGGING and labels is None:
            eval_labels = None
        validation = read_task_file(
            config, config.validation, eval_labels, config.max_eval_examples
        )
    task = TASK_CLASSES[config.type](config, text, train, validation)  # type: ignore[call-arg]
    for lang, path in config.validation_languages.items():
        eval_labels = None if config.type is TaskType.TAGGING and labels is None else train.labels
        data = read_task_file(
            config, path, eval_labels or None, config.max_eval_examples, language=lang
        )
        task.add_language(lang, data, path)
    return task


__all__ = ["RunContext", "Task", "TextSettings", "build_task", "TASK_CLASSES"]
