"""Image-text alignment, the multimodal intermediate task: captions are mean-pooled (the exporter's
masked MEAN pooling), projected to the image feature size and aligned with precomputed, frozen,
L2-normalised image vectors by a symmetric InfoNCE loss with a learnable temperature (CLIP).

The data is the image-text layout of ``xretrieve.formats.image_text`` (what ``evaluate`` reads):
the gallery ``images.npy`` with ``image_ids.txt``, caption lines naming their image by id.
Several captions of one image in a batch are all positives of that image (the image is used once),
so duplicates never act as each other's negatives. The projection starts from the base
checkpoint's ``projection.safetensors`` when it has one of the same shape (a checkpoint of
multimodal intermediate training), else fresh.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from exporters.checkpoint import PROJECTION_INFO, PROJECTION_WEIGHTS
from xretrieve.core.errors import InputError
from xretrieve.core.readers import read_json_object
from xretrieve.evaluation.metrics import recall_at_1
from xretrieve.formats.image_text import read_image_gallery
from xretrieve.trainer.config import TaskConfig
from xretrieve.trainer.readers import ImageTextExample, TaskData
from xretrieve.trainer.tasks.base import (
    Batch,
    Feature,
    RunContext,
    Task,
    TextSettings,
    encode,
    masked_mean,
    text_batch,
    tokenize,
)

logger = logging.getLogger(__name__)


class ProjectionHead(nn.Module):
    """``projection``: Linear(hidden -> image_dim) over mean-pooled text; ``logit_scale``: log of
    the inverse temperature, initialised to log(1/0.07) and clamped at log(100) as in CLIP."""

    def __init__(self, hidden: int, image_dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(hidden, image_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(pooled).float(), dim=-1)


def load_image_features(path: Path) -> torch.Tensor:
    """``(n_images, dim)`` float32, L2-normalised rows of the gallery ``path`` (``images.npy``,
    its rows named by ``image_ids.txt`` beside it)."""
    return torch.from_numpy(read_image_gallery(path).features)


def contrastive_loss(
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE: ``text_emb`` (n, d) and ``image_emb`` (m, d) L2-normalised, ``positives``
    (n, m) bool with at least one True per row and column. Each side's loss is the mean over rows
    of -log(softmax mass on the positives)."""
    logits = logit_scale.clamp(max=math.log(100)).exp() * text_emb @ image_emb.T
    negative_inf = torch.finfo(logits.dtype).min

    def side(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positive = scores.masked_fill(~mask, negative_inf).logsumexp(dim=1)
        return (scores.logsumexp(dim=1) - positive).mean()

    return (side(logits, positives) + side(logits.T, positives.T)) / 2


class ImageTextTask(Task):
    main_metric = "recall_at_1"

    def __init__(
        self, config: TaskConfig, text: TextSettings, train: TaskData, validation: TaskData | None
    ) -> None:
        super().__init__(config, text)
        assert config.image_features is not None  # checked when the config is loaded
        self.images = load_image_features(config.image_features)
        self.head = ProjectionHead(text.hidden_size, self.images.shape[1])
        self.train_features = self._featurise(train.examples)
        if validation is not None:
            self.set_validation(validation, config.validation)

    def set_validation(self, data: TaskData, path: Any) -> None:
        self.eval_features = self._featurise(data.examples)

    def init_from_checkpoint(self, source: Any) -> None:
        """The base checkpoint's trained projection (``projection.safetensors``), when it has
        one of this head's shape; the temperature starts fresh."""
        weights = Path(source) / PROJECTION_WEIGHTS
        if not weights.is_file():
            return
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as error:
            raise InputError(weights, f"cannot read the projection head: {error}") from None
        info = read_json_object(Path(source) / PROJECTION_INFO)
        layer = self.head.projection
        shape = tuple(tensors.get("weight", torch.empty(0)).shape)
        fits = (
            shape == tuple(layer.weight.shape)
            and tuple(tensors.get("bias", torch.empty(0)).shape) == tuple(layer.bias.shape)
            and isinstance(info, dict)
            and info.get("pooling", "mean") == "mean"
        )
        if not fits:
            logger.warning(
                "%s: projection %s does not fit the task's %s (image features of another "
                "size?): the projection starts fresh",
                weights,
                shape,
                tuple(layer.weight.shape),
            )
            return
        with torch.no_grad():
            layer.weight.copy_(tensors["weight"])
            layer.bias.copy_(tensors["bias"])
        logger.info("%s: projection initialised from %s", self.name, weights)

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.images = self.images.to(device)

    def _featurise(self, examples: Sequence[ImageTextExample]) -> list[Feature]:
        features = tokenize(
            self.text, [example.caption for example in examples], None, self.max_length
        )
        for feature, example in zip(features, examples, strict=True):
            feature["image"] = example.image
        return features

    def collate(self, features: Sequence[Feature], train: bool) -> Batch:
        batch = text_batch(features, self.text)
        image_ids = torch.tensor([feature["image"] for feature in features])
        unique, inverse = torch.unique(image_ids, return_inverse=True)
        batch["images"] = self.images[unique.to(self.images.device)]
        batch["positives"] = inverse.unsqueeze(1) == torch.arange(len(unique)).unsqueeze(0)
        batch["image_ids"] = image_ids
        return batch

    def text_embeddings(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        return self.head(masked_mean(encode(encoder, batch), batch["attention_mask"]))

    def loss(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        text_emb = self.text_embeddings(encoder, batch)
        return contrastive_loss(
            text_emb, batch["images"], batch["positives"], self.head.logit_scale
        )

    def evaluate(self, encoder: nn.Module, run: RunContext) -> dict[str, float]:
        """Recall@1 over the validation set: each caption against all its images, each image
        against all captions (right if the best caption is one of its own)."""
        text_emb, image_ids = [], []
        for _, batch in self.eval_batches(run):
            with run.autocast():
                text_emb.append(self.text_embeddings(encoder, batch).cpu())
            image_ids.append(batch["image_ids"].cpu())
        texts = torch.cat(text_emb)
        ids = torch.cat(image_ids)
        unique = torch.unique(ids)
        sims = (texts @ self.images[unique.to(self.images.device)].cpu().T).numpy()
        positives = (ids.unsqueeze(1) == unique.unsqueeze(0)).numpy()
        text_to_image = recall_at_1(sims, positives)
        image_to_text = recall_at_1(sims.T, positives.T)
        return {
            "recall_at_1": (text_to_image + image_to_text) / 2,
            "text_to_image_r1": text_to_image,
            "image_to_text_r1": image_to_text,
        }

    def head_info(self) -> dict[str, Any]:
        return {
            **super().head_info(),
            "pooling": "mean",
            "in_dim": self.text.hidden_size,
            "out_dim": int(self.images.shape[1]),
            "image_features": str(self.config.image_features),
        }
