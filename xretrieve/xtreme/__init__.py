"""XTREME (Hu et al. 2020) submissions scored with the semantics of its ``evaluate.py``.

- ``score_submission(predictions_dir, labels_dir, tasks=None) -> XtremeScores`` (``score``);
  ``XtremeScores.to_json()`` is the reference's report structure
- ``TASKS``, ``XtremeTask``, ``Group``, ``Scoring``, ``task_by_name`` (``tasks``): the task table
  and the ``TASK/test-LANG.tsv|json`` layout, for code that writes predictions
- ``metrics``: accuracy, seqeval chunk F1, BUCC pair F1, SQuAD / MLQA exact match and F1
- ``submission``: reading and checking prediction and label files
- ``data`` (imported on its own): where a download's files are (``locate``, ``xtreme_files``)
  and readers returning the trainer's example records (``read_examples``, ``read_bucc``,
  ``read_tatoeba_sides``)
"""

from xretrieve.xtreme.score import (
    LanguageScore,
    TaskScore,
    XtremeScores,
    aggregate,
    score_language,
    score_submission,
    score_task,
)
from xretrieve.xtreme.tasks import (
    GROUP_TASKS,
    TASK_NAMES,
    TASKS,
    Group,
    Scoring,
    XtremeTask,
    task_by_name,
)

__all__ = [
    "GROUP_TASKS",
    "TASKS",
    "TASK_NAMES",
    "Group",
    "LanguageScore",
    "Scoring",
    "TaskScore",
    "XtremeScores",
    "XtremeTask",
    "aggregate",
    "score_language",
    "score_submission",
    "score_task",
    "task_by_name",
]
