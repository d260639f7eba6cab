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

Phase 3 (each imported on its own, they load the trainer and the encoder when used):

- ``run``: ``run_xtreme(RunRequest(...))``, every checkpoint x target task x seed, resumable;
  ``grid``: its reports; ``units``: a unit's files, fingerprint and scores
- ``recipes``: how each task is fine-tuned or embedded (presets with their sources, TOML
  overrides); ``targets``: the target-task table (``EXTRA_TARGETS`` for non-XTREME tasks)
- ``finetune`` and ``retrieval``: one unit of each kind; ``predict``: ``predict_xtreme``, one
  task from an already fine-tuned checkpoint; ``outputs``: what is written where
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
