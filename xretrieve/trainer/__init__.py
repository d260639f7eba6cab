"""xretrieve's own torch trainer: English intermediate-task training (STILTs) on a multilingual
encoder, multi-task and multimodal, producing checkpoints that ``xretrieve export`` takes as is.

Public API: ``load_config`` / ``TrainConfig`` (config.py), ``Trainer`` / ``train`` (loop.py)."""

from xretrieve.trainer.config import (
    EvalConfig,
    OptimConfig,
    Precision,
    RetrievalEvalConfig,
    SamplingConfig,
    SamplingStrategy,
    SamplingUnit,
    TaskConfig,
    TaskType,
    TrainConfig,
    config_from_dict,
    load_config,
)
from xretrieve.trainer.loop import EvalRecord, StepLog, Trainer, TrainResult, train

__all__ = [
    "EvalConfig",
    "EvalRecord",
    "OptimConfig",
    "Precision",
    "RetrievalEvalConfig",
    "SamplingConfig",
    "SamplingStrategy",
    "SamplingUnit",
    "StepLog",
    "TaskConfig",
    "TaskType",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "config_from_dict",
    "load_config",
    "train",
]
