"""Evaluate many checkpoints at once: BUCC, Tatoeba and image-text retrieval, a layer sweep from
one forward pass, an embedding cache, resumable results, leaderboards with bootstrap intervals,
resource-group reports and plots.

- ``evaluate(EvaluationConfig(...), encoder_factory=None, progress=None) -> EvaluationSummary``
  (``runner``); ``plan_model``, ``parse_layers``
- ``LayerEmbeddingCache``, ``CachedSource`` (an ``EmbeddingSource``) (``embedding_cache``);
  ``EmbeddingStore`` (``store``)
- tasks: ``BuccTask``, ``TatoebaTask``, ``ImageTextRetrievalTask``, ``TASKS``, ``ScoringSettings``
- ``bootstrap``: resampling and percentile intervals; ``resources``: Joshi et al. 2020 classes
- ``image_text``: the caption/image layout and Recall@k
"""

from xretrieve.evaluation.embedding_cache import CachedSource, LayerEmbeddingCache
from xretrieve.evaluation.resources import (
    DEFAULT_GROUPS,
    JOSHI_CLASSES,
    load_resource_groups,
    resource_group,
)
from xretrieve.evaluation.results import COLUMNS, ResultRow, ResultsLog
from xretrieve.evaluation.runner import (
    EvaluationConfig,
    EvaluationSummary,
    ModelPlan,
    evaluate,
    parse_layers,
    plan_model,
)
from xretrieve.evaluation.store import EmbeddingStore
from xretrieve.evaluation.tasks import (
    TASKS,
    BuccTask,
    ImageTextRetrievalTask,
    ScoringSettings,
    TatoebaTask,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_GROUPS",
    "JOSHI_CLASSES",
    "TASKS",
    "BuccTask",
    "CachedSource",
    "EmbeddingStore",
    "EvaluationConfig",
    "EvaluationSummary",
    "ImageTextRetrievalTask",
    "LayerEmbeddingCache",
    "ModelPlan",
    "ResultRow",
    "ResultsLog",
    "ScoringSettings",
    "TatoebaTask",
    "evaluate",
    "load_resource_groups",
    "parse_layers",
    "plan_model",
    "resource_group",
]
