"""The one vocabulary of settings (``xretrieve.core.settings``): a user's string becomes a member
once, at the edge of the public API, and a bad value is an ``ArgumentError`` naming the argument;
members pass through; the one device-to-dtype rule; and what JSON and cache ids keep writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import xretrieve
from xretrieve.core.errors import ArgumentError, InputError
from xretrieve.core.settings import (
    Backend,
    Device,
    Dtype,
    Pooling,
    ThresholdSource,
    dtype_on,
    parse_backend,
    parse_device,
    parse_dtype,
    parse_pooling,
    parse_setting,
)


@pytest.mark.parametrize(
    ("parse", "kind", "name"),
    [
        (parse_backend, Backend, "backend"),
        (parse_device, Device, "device"),
        (parse_dtype, Dtype, "dtype"),
        (parse_pooling, Pooling, "pooling"),
    ],
)
def test_each_setting_parses_its_values_and_members_and_names_a_bad_value(
    parse, kind, name
) -> None:
    for member in kind:
        assert parse(member.value) is member and parse(member) is member
    with pytest.raises(ArgumentError) as caught:
        parse("bogus")
    assert caught.value.argument == name
    choices = ", ".join(member.value for member in kind)
    assert str(caught.value) == f"unknown {name} 'bogus'; {name} must be one of {choices}"


def test_a_member_not_allowed_here_is_named_with_the_choices() -> None:
    allowed = (Dtype.AUTO, Dtype.FP16, Dtype.FP32)
    assert parse_dtype("fp16", allowed=allowed) is Dtype.FP16
    with pytest.raises(ArgumentError, match="^dtype must be one of auto, fp16, fp32, not 'int8'$"):
        parse_dtype("int8", allowed=allowed)
    with pytest.raises(ArgumentError) as caught:
        parse_setting("out_dtype", Dtype, 3)
    assert caught.value.argument == "out_dtype"


def test_settings_are_str_members_whose_value_is_what_json_holds() -> None:
    assert Dtype.FP16 == "fp16" and Pooling.MEAN.value == "mean"
    assert ThresholdSource("tuned") is ThresholdSource.TUNED
    assert [source.value for source in ThresholdSource] == [
        "given",
        "tuned",
        "model",
        "default",
        "none",
    ]


def test_the_one_device_to_dtype_rule() -> None:
    for backend in Backend:
        assert dtype_on(Device.CUDA, backend) is Dtype.FP16
        assert dtype_on(Device.CUDA, backend, Dtype.FP32) is Dtype.FP32
        assert dtype_on(Device.CPU, backend, Dtype.FP16) is Dtype.FP16
    # On the CPU torch runs fp32; ONNX Runtime leaves AUTO to the export's held-out check.
    assert dtype_on(Device.CPU, Backend.TORCH) is Dtype.FP32
    assert dtype_on(Device.CPU, Backend.ORT) is Dtype.AUTO


def test_exporters_use_the_same_enums() -> None:
    import exporters
    from exporters import ExportConfig

    assert exporters.Dtype is Dtype and exporters.Pooling is Pooling
    config = ExportConfig(pooling="cls", dtype="fp32")
    assert config.pooling is Pooling.CLS and config.dtype is Dtype.FP32
    with pytest.raises(ArgumentError) as caught:
        ExportConfig(dtype="bf16")
    assert caught.value.argument == "dtype"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"backend": "onnx"}, "backend"),
        ({"device": "tpu"}, "device"),
        ({"dtype": "bf16"}, "dtype"),
        ({"dtype": Dtype.INT8}, "dtype"),
        ({"pooling": "median"}, "pooling"),
    ],
)
def test_load_encoder_names_a_bad_setting_before_any_work(
    tmp_path: Path, kwargs: dict, argument: str
) -> None:
    with pytest.raises(ArgumentError) as caught:
        xretrieve.load_encoder(tmp_path / "missing", **kwargs)
    assert caught.value.argument == argument


def test_load_encoder_takes_members_and_values_alike(tmp_path: Path) -> None:
    """Good settings pass the edge: the missing model is what is refused then."""
    for settings in (
        {"backend": Backend.TORCH, "device": Device.CPU, "dtype": Dtype.FP32, "pooling": "cls"},
        {"backend": "torch", "device": "cpu", "dtype": "fp32", "pooling": Pooling.CLS},
    ):
        with pytest.raises(InputError, match="no such model directory"):
            xretrieve.load_encoder(tmp_path / "missing", **settings)


def test_mining_api_names_bad_settings() -> None:
    src = np.eye(3, dtype=np.float32)
    for kwargs, argument in (({"margin": "sum"}, "margin"), ({"mode": 1}, "mode")):
        with pytest.raises(ArgumentError) as caught:
            xretrieve.mine_embeddings(src, src, **kwargs)
        assert caught.value.argument == argument
    with pytest.raises(ArgumentError) as caught:
        xretrieve.mine_embeddings(src, src, device="gpu")
    assert caught.value.argument == "device"
    pairs = xretrieve.mine_embeddings(src, src, k=2, device=Device.CPU, threshold=0.0)
    assert len(pairs) == 3


def test_evaluate_names_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError) as caught:
        xretrieve.evaluate_bucc(tmp_path, ["de"], emb_dir=tmp_path, model=None, margin="sum")
    assert caught.value.argument == "margin"
    with pytest.raises(ArgumentError) as caught:
        xretrieve.evaluate_tatoeba(tmp_path, ["deu"], emb_dir=tmp_path, model=None, device="tpu")
    assert caught.value.argument == "device"
