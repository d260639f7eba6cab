"""torch backend on the exporter's ``PooledEncoder`` (so pooling is one piece of code): fp16 with
scaled-dot-product attention on CUDA, fp32 on CPU. The peer the ONNX Runtime path is measured
against, and the fallback when ONNX Runtime cannot run a model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xretrieve.core.settings import Device, Dtype, Pooling

logger = logging.getLogger(__name__)


class TorchBackend:
    """A checkpoint run by torch: ``exporters.wrapper.sentence_encoder`` (the pooled encoder an
    export of it computes, a sentence-transformers folder's pipeline included) in ``dtype``
    (FP16 or FP32) on ``device`` (CUDA or CPU: ``load.usable_device``), SDPA attention.
    ``pooling`` None is the folder's own; ``prompt_tokens`` leading tokens are left out of
    pooling (a prompt, for a pipeline that excludes it)."""

    def __init__(
        self,
        checkpoint_dir: Path,
        *,
        layers: Sequence[int],
        pooling: Pooling | str | None,
        normalize: bool,
        device: Device = Device.CPU,
        dtype: Dtype = Dtype.FP32,
        projection: bool = False,
        prompt_tokens: int = 0,
    ) -> None:
        import torch

        from exporters.wrapper import sentence_encoder

        if device not in (Device.CUDA, Device.CPU) or dtype not in (Dtype.FP16, Dtype.FP32):
            raise ValueError(
                f"the torch backend runs fp16 or fp32 on cuda or cpu, not {dtype} {device}"
            )
        encoder = sentence_encoder(
            checkpoint_dir,
            layers=tuple(layers),
            pooling=pooling,
            normalize=normalize,
            projection=projection,
            prompt_tokens=prompt_tokens,
            attn_implementation="sdpa",
        )
        config = encoder.config
        torch_dtype = torch.float16 if dtype is Dtype.FP16 else torch.float32
        self._torch = torch
        self._device = torch.device(device.value)
        self.module = encoder.to(device=self._device, dtype=torch_dtype).eval()
        self.dim = int(encoder.dim)
        self.n_layers = len(encoder.layers)
        self.layers = tuple(encoder.layers)
        self.config = config
        self.provider = f"torch-{device.value}-{dtype.value}-sdpa"
        logger.info("torch backend on %s (%s, SDPA attention)", device.value, dtype.value)

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        cuda = self._device.type == "cuda"
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids)
            mask = torch.from_numpy(attention_mask)
            if cuda:
                ids = ids.pin_memory().to(self._device, non_blocking=True)
                mask = mask.pin_memory().to(self._device, non_blocking=True)
            outputs = self.module(ids, mask)
            if isinstance(outputs, tuple):
                return outputs[0].float().cpu().numpy(), outputs[1].float().cpu().numpy()
            return outputs.float().cpu().numpy(), None

    def is_out_of_memory(self, error: BaseException) -> bool:
        if isinstance(error, self._torch.cuda.OutOfMemoryError | MemoryError):
            return True
        # The CPU allocator raises a plain RuntimeError.
        return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)

    def release_memory(self) -> None:
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()
