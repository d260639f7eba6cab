"""The image_text task's projection starts from the base checkpoint's (a checkpoint of multimodal
intermediate training) when it fits the gallery, and fresh otherwise."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trainer_data
from safetensors.numpy import save_file

from xretrieve.core.errors import InputError
from xretrieve.trainer import Trainer, config_from_dict


def _base_with_projection(tiny_xlmr_checkpoint: Path, folder: Path, out_dim: int) -> np.ndarray:
    shutil.copytree(tiny_xlmr_checkpoint, folder)
    weight = np.random.default_rng(3).standard_normal((out_dim, 32)).astype(np.float32)
    save_file(
        {"weight": weight, "bias": np.full(out_dim, 0.5, np.float32)},
        str(folder / "projection.safetensors"),
    )
    info = {"in_dim": 32, "out_dim": out_dim, "pooling": "mean", "layer": -1, "normalize": True}
    (folder / "projection.json").write_text(json.dumps(info))
    return weight


def _head(base: Path, tmp_path: Path) -> torch.nn.Module:
    task = trainer_data.write_image_text_task(tmp_path / "data", dim=12)
    config = config_from_dict(
        {"base": str(base), "output_dir": str(tmp_path / "out"), "tasks": [task]}
    )
    trainer = Trainer(config, device="cpu")
    trainer._setup(None)
    return trainer.tasks[0].head


def test_projection_starts_from_the_base_checkpoints(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    weight = _base_with_projection(tiny_xlmr_checkpoint, tmp_path / "multimodal", out_dim=12)
    head = _head(tmp_path / "multimodal", tmp_path)
    np.testing.assert_array_equal(head.projection.weight.detach().numpy(), weight)
    assert torch.all(head.projection.bias == 0.5)


def test_a_projection_of_another_size_is_not_used(
    tiny_xlmr_checkpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weight = _base_with_projection(tiny_xlmr_checkpoint, tmp_path / "multimodal", out_dim=8)
    with caplog.at_level(logging.WARNING):
        head = _head(tmp_path / "multimodal", tmp_path)
    assert head.projection.weight.shape == (12, 32)
    assert not torch.all(head.projection.bias == 0.5)
    assert "projection starts fresh" in caplog.text
    assert weight.shape == (8, 32)


@pytest.mark.parametrize(
    ("text", "message"), [('{"pooling": ', "not valid JSON"), (None, "file not found")]
)
def test_a_broken_projection_record_is_an_error_naming_it(
    tiny_xlmr_checkpoint, tmp_path: Path, text: str | None, message: str
) -> None:
    _base_with_projection(tiny_xlmr_checkpoint, tmp_path / "multimodal", out_dim=12)
    info = tmp_path / "multimodal" / "projection.json"
    if text is None:
        info.unlink()
    else:
        info.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        _head(tmp_path / "multimodal", tmp_path)
    assert error.value.path == info
