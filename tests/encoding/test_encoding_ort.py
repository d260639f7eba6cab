"""load_encoder and the ONNX Runtime backend: ORT/torch parity on tiny random XLM-R and BERT,
the export cache, export directories, multi-layer and prefixed exports, provider choice;
and, on a GPU only, ORT CUDA (fp16, IO binding) against torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tiny_models import SAMPLE_SENTENCES

import xretrieve.encoding.load as load_module
from xretrieve.core.errors import ArgumentError, InputError, XRetrieveError
from xretrieve.core.settings import Backend, Device, parse_backend, parse_device
from xretrieve.encoding import load_encoder, resolve_device
from xretrieve.encoding.ort_backend import CudaProviderUnavailable

TEXTS = SAMPLE_SENTENCES + [
    "the cat and the dog",
    "Der Hund " * 20,
    "",
    "城市 " * 5,
    "x",
    "le la les de des et un une est en du que qui dans pour pas sur au",
]


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exports made on first use go to a private cache, shared by this module's tests."""
    directory = tmp_path_factory.mktemp("xretrieve-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XRETRIEVE_CACHE", str(directory))
        yield directory


@pytest.mark.parametrize("arch", ["xlmr", "bert"])
def test_ort_matches_torch_on_cpu(arch: str, request: pytest.FixtureRequest) -> None:
    checkpoint = request.getfixturevalue(f"tiny_{arch}_checkpoint")
    ort_encoder = load_encoder(checkpoint, batch_tokens=256, dtype="fp32")
    torch_encoder = load_encoder(checkpoint, backend="torch", batch_tokens=256)
    assert ort_encoder.provider == "CPUExecutionProvider"
    assert torch_encoder.provider == "torch-cpu-fp32-sdpa"
    assert ort_encoder.tokenizer.max_length == torch_encoder.tokenizer.max_length
    ort_emb, torch_emb = ort_encoder.encode(TEXTS), torch_encoder.encode(TEXTS)
    assert ort_emb.shape == (len(TEXTS), 32) and ort_emb.dtype == np.float32
    np.testing.assert_allclose(ort_emb, torch_emb, atol=1e-5)
    assert ort_encoder.last_stats.truncated == torch_encoder.last_stats.truncated >= 1


def test_checkpoint_is_exported_once_and_reused(
    tiny_xlmr_checkpoint: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_encoder(tiny_xlmr_checkpoint)
    exports = sorted(path.name for path in (cache / "exports").iterdir() if path.is_dir())
    assert any(name.endswith("-L2-mean-auto") for name in exports)  # the CPU's default

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("exporters.export_checkpoint", no_export)
    again = load_encoder(tiny_xlmr_checkpoint)
    np.testing.assert_array_equal(first.encode(TEXTS), again.encode(TEXTS))


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def test_a_damaged_cached_export_is_exported_again_with_a_warning(
    tiny_xlmr_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "cache"))
    first = load_encoder(tiny_xlmr_checkpoint).encode(TEXTS)
    (export_dir,) = [path for path in (tmp_path / "cache" / "exports").iterdir() if path.is_dir()]
    model = export_dir / "model.onnx"
    # A flipped bit in the weights (the end of the file is initializer data) loads fine but
    # computes something else.
    _flip_byte(model, model.stat().st_size - 7)
    with caplog.at_level("WARNING"):
        again = load_encoder(tiny_xlmr_checkpoint).encode(TEXTS)
    assert "failed its integrity check" in caplog.text and "model.onnx changed" in caplog.text
    np.testing.assert_allclose(again, first, atol=1e-6)
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_encoder(tiny_xlmr_checkpoint)
    assert "integrity" not in caplog.text


def test_windowed_ort_run_equals_one_shot(tiny_xlmr_checkpoint: Path) -> None:
    one_shot = load_encoder(tiny_xlmr_checkpoint, batch_tokens=100_000).encode(TEXTS)
    windowed = load_encoder(tiny_xlmr_checkpoint, batch_tokens=64, window=3).encode(TEXTS)
    np.testing.assert_allclose(windowed, one_shot, atol=1e-5)


def test_export_directory_is_used_as_is_and_its_settings_are_fixed(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    from exporters import ExportConfig, export_checkpoint

    export_dir = tmp_path / "export"
    export_checkpoint(
        tiny_xlmr_checkpoint, export_dir, ExportConfig(dtype="fp32", text_prefix="query: ")
    )
    encoder = load_encoder(export_dir)
    assert encoder.name == "export" and encoder.layers == (2,)
    prefixed = load_encoder(tiny_xlmr_checkpoint, backend="torch", text_prefix="query: ")
    np.testing.assert_allclose(encoder.encode(TEXTS), prefixed.encode(TEXTS), atol=1e-5)
    plain = load_encoder(tiny_xlmr_checkpoint, backend="torch").encode(TEXTS)
    assert not np.allclose(plain, prefixed.encode(TEXTS), atol=1e-3)
    # torch from an export runs the checkpoint it came from, with the export's settings.
    from_export = load_encoder(export_dir, backend="torch")
    np.testing.assert_allclose(from_export.encode(TEXTS), prefixed.encode(TEXTS), atol=1e-6)
    assert load_encoder(export_dir, layers=[-1]).layers == (2,)
    with pytest.raises(XRetrieveError, match="fixed settings"):
        load_encoder(export_dir, layers=[1])
    with pytest.raises(XRetrieveError, match="fixed settings"):
        load_encoder(export_dir, text_prefix="passage: ")


def test_multi_layer_export_gives_layer_rows(tiny_bert_checkpoint: Path) -> None:
    ort_encoder = load_encoder(tiny_bert_checkpoint, layers=[1, -1], dtype="fp32")
    torch_encoder = load_encoder(tiny_bert_checkpoint, backend="torch", layers=[1, -1])
    assert ort_encoder.layers == torch_encoder.layers == (1, 2)
    layer_rows = ort_encoder.encode_layers(TEXTS)
    assert layer_rows.shape == (len(TEXTS), 2, 32)
    np.testing.assert_allclose(layer_rows, torch_encoder.encode_layers(TEXTS), atol=1e-5)
    np.testing.assert_allclose(ort_encoder.encode(TEXTS), layer_rows[:, 0], atol=1e-6)


def test_ort_out_of_memory_messages_are_recognised(tiny_xlmr_checkpoint: Path) -> None:
    backend = load_encoder(tiny_xlmr_checkpoint).backend
    assert backend.is_out_of_memory(
        RuntimeError(
            "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : ... BFCArena::AllocateRawInternal"
            " Failed to allocate memory for requested buffer of size 123"
        )
    )
    assert backend.is_out_of_memory(RuntimeError("CUDA failure 2: out of memory"))
    assert not backend.is_out_of_memory(RuntimeError("Invalid rank for input: input_ids"))


def test_bad_model_arguments(tmp_path: Path, tiny_xlmr_checkpoint: Path) -> None:
    with pytest.raises(InputError, match="no such model directory"):
        load_encoder(tmp_path / "missing")
    with pytest.raises(InputError, match="neither an export"):
        load_encoder(tmp_path)
    with pytest.raises(XRetrieveError, match="unknown backend"):
        load_encoder(tiny_xlmr_checkpoint, backend="tensorrt")
    with pytest.raises(XRetrieveError, match="unknown device"):
        load_encoder(tiny_xlmr_checkpoint, device="tpu")


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def test_settings_parse_values_and_refuse_unknown_ones() -> None:
    assert parse_backend("torch") is Backend.TORCH and parse_backend(Backend.ORT) is Backend.ORT
    assert parse_device("cuda") is Device.CUDA
    with pytest.raises(
        ArgumentError, match="unknown backend 'tensorrt'; backend must be one of ort, torch"
    ):
        parse_backend("tensorrt")
    with pytest.raises(
        ArgumentError, match="unknown device 'tpu'; device must be one of auto, cuda, cpu"
    ):
        resolve_device("tpu", "ort")


def test_resolve_device_returns_members() -> None:
    assert resolve_device("cpu", "torch") is Device.CPU
    assert resolve_device(Device.AUTO, Backend.ORT) in (Device.CPU, Device.CUDA)
    assert resolve_device("auto", "torch") is (Device.CUDA if _gpu() else Device.CPU)


@pytest.mark.skipif(_gpu(), reason="checks the no-GPU behaviour")
def test_without_a_gpu_auto_is_cpu_and_cuda_is_refused(tiny_xlmr_checkpoint: Path) -> None:
    assert resolve_device("auto", "ort") == resolve_device("auto", "torch") == "cpu"
    with pytest.raises(XRetrieveError, match="no usable CUDA GPU"):
        load_encoder(tiny_xlmr_checkpoint, device="cuda")


@pytest.mark.skipif(_gpu(), reason="checks the fallback when ORT cannot use CUDA")
def test_auto_falls_back_to_cpu_when_ort_cannot_load_cuda(
    tiny_xlmr_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend a GPU is visible: onnxruntime then cannot load its CUDA provider here.
    monkeypatch.setattr(load_module, "usable_device", lambda device, backend: Device.CUDA)
    encoder = load_encoder(tiny_xlmr_checkpoint, device="auto")
    assert encoder.provider == "CPUExecutionProvider"
    with pytest.raises(CudaProviderUnavailable):
        load_encoder(tiny_xlmr_checkpoint, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["xlmr", "bert"])
def test_ort_cuda_fp16_matches_torch(arch: str, request: pytest.FixtureRequest) -> None:
    checkpoint = request.getfixturevalue(f"tiny_{arch}_checkpoint")
    ort_cuda = load_encoder(checkpoint, device="cuda")
    torch_cuda = load_encoder(checkpoint, backend="torch", device="cuda")
    torch_cpu = load_encoder(checkpoint, backend="torch", device="cpu")
    assert ort_cuda.provider == "CUDAExecutionProvider"
    assert torch_cuda.provider == "torch-cuda-fp16-sdpa"
    texts = TEXTS * 20
    ort_emb, torch_emb = ort_cuda.encode(texts), torch_cuda.encode(texts)
    reference = torch_cpu.encode(texts)
    assert ort_emb.dtype == np.float32 and ort_emb.shape == reference.shape
    for emb in (ort_emb, torch_emb):
        cosines = np.sum(emb * reference, axis=1)
        assert cosines.min() > 0.999, cosines.min()
    assert np.sum(ort_emb * torch_emb, axis=1).min() > 0.999


# ---------------------------------------------------------------- the CPU's default dtype


@pytest.mark.parametrize(("max_drop", "expected"), [(100.0, "int8"), (-100.0, "fp32")])
def test_cpu_default_is_int8_only_where_every_language_keeps_its_accuracy(
    tiny_xlmr_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_drop: float,
    expected: str,
) -> None:
    """The held-out check of ``export --dtype auto`` decides; -100 points is a check no graph
    passes (int8 would have to gain 100 points in every language), so fp32 it is."""
    import exporters.dtype_choice
    from exporters import read_manifest

    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path))
    monkeypatch.setattr(exporters.dtype_choice, "MAX_ACCURACY_DROP", max_drop)
    encoder = load_encoder(tiny_xlmr_checkpoint, device="cpu")
    (export_dir,) = [path for path in (tmp_path / "exports").iterdir() if path.is_dir()]
    manifest = read_manifest(export_dir)
    assert manifest.dtype.value == expected
    assert manifest.dtype_choice["chosen"] == expected
    assert manifest.dtype_choice["max_drop"] == max_drop
    fp32 = load_encoder(tiny_xlmr_checkpoint, device="cpu", dtype="fp32").encode(TEXTS)
    difference = np.abs(encoder.encode(TEXTS) - fp32).max()
    if expected == "fp32":
        assert difference < 1e-6
    else:  # a real int8 graph: close to fp32, not equal
        assert 1e-6 < difference < 0.05


def test_default_export_dtype_per_device(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a checkpoint is exported as by default: fp16 for CUDA, the held-out choice (AUTO,
    settled on the CPU even where a GPU is usable) for the CPU; torch on the CPU runs fp32."""
    from xretrieve.core.settings import Dtype, Pooling, SourceKind

    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path))
    configs = []

    def record(checkpoint, out_dir, config, progress):
        configs.append(config)
        raise RuntimeError("recorded")

    monkeypatch.setattr("exporters.export_checkpoint", record)
    source = load_module.ModelSource(SourceKind.CHECKPOINT, tiny_xlmr_checkpoint, "tiny")
    settings = load_module._Settings(None, Pooling.MEAN, Dtype.AUTO, None, 256, 100)
    for device in (Device.CUDA, Device.CPU):
        with pytest.raises(RuntimeError, match="recorded"):
            load_module.ensure_export(source, settings, device, None)
    assert [(c.dtype, c.device) for c in configs] == [
        (Dtype.FP16, Device.CUDA),
        (Dtype.AUTO, Device.CPU),
    ]
    assert load_module.export_key(source, settings, Device.CUDA).endswith("-fp16")
    assert load_module.export_key(source, settings, Device.CPU).endswith("-auto")
    torch_encoder = load_encoder(tiny_xlmr_checkpoint, backend="torch", device="cpu")
    assert torch_encoder.provider == "torch-cpu-fp32-sdpa"


# ---------------------------------------------------------------- ORT tuning options


def test_pad_to_bucket_by_hand() -> None:
    from xretrieve.encoding.ort_backend import pad_to_bucket

    ids = np.array([[0, 5, 6, 2], [0, 7, 2, 1]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=np.int64)
    padded_ids, padded_mask = pad_to_bucket(ids, mask, 3, pad_token_id=1)
    np.testing.assert_array_equal(padded_ids, [[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    np.testing.assert_array_equal(padded_mask, [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    same_ids, same_mask = pad_to_bucket(ids, mask, 4, pad_token_id=1)
    assert same_ids is ids and same_mask is mask


def test_seq_buckets_do_not_change_embeddings(tiny_xlmr_checkpoint: Path) -> None:
    from xretrieve.encoding.ort_backend import OrtOptions

    plain = load_encoder(tiny_xlmr_checkpoint, batch_tokens=256)
    bucketed = load_encoder(
        tiny_xlmr_checkpoint, batch_tokens=256, ort_options=OrtOptions(seq_bucket=32)
    )
    calls: list[int] = []
    run = bucketed.backend.session.run

    def spy(names, feeds):
        calls.append(feeds["input_ids"].shape[1])
        return run(names, feeds)

    bucketed.backend.session.run = spy
    np.testing.assert_allclose(bucketed.encode(TEXTS), plain.encode(TEXTS), atol=1e-6)
    assert calls and all(width % 32 == 0 for width in calls)


def test_cuda_provider_options() -> None:
    from xretrieve.encoding.ort_backend import OrtOptions, cuda_provider_options

    assert cuda_provider_options(1, OrtOptions()) == {
        "device_id": "1",
        "arena_extend_strategy": "kSameAsRequested",
    }
    options = OrtOptions(
        sdpa_kernel=("flash", "efficient"),
        cuda_provider_options=(("enable_skip_layer_norm_strict_mode", "1"),),
    )
    provider = cuda_provider_options(0, options)
    assert provider["sdpa_kernel"] == "3"  # flash (1) | memory-efficient (2)
    assert provider["enable_skip_layer_norm_strict_mode"] == "1"
    with pytest.raises(XRetrieveError, match="unknown attention kernel 'fast'"):
        OrtOptions(sdpa_kernel=("fast",))
    with pytest.raises(XRetrieveError, match="seq_bucket must be at least 1"):
        OrtOptions(seq_bucket=0)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["flash", "efficient", "math"])
def test_ort_cuda_attention_kernels_and_buckets_match_cpu(
    kernel: str, tiny_xlmr_checkpoint: Path
) -> None:
    from xretrieve.encoding.ort_backend import OrtOptions

    cpu = load_encoder(tiny_xlmr_checkpoint, device="cpu").encode(TEXTS)
    options = OrtOptions(seq_bucket=16, sdpa_kernel=(kernel,))
    cuda = load_encoder(tiny_xlmr_checkpoint, device="cuda", ort_options=options)
    assert cuda.provider == "CUDAExecutionProvider"
    cosines = (cuda.encode(TEXTS) * cpu).sum(axis=1)
    assert cosines.mean() > 0.999


def test_cpu_session_options_are_applied(tiny_xlmr_checkpoint: Path) -> None:
    """Read back from the session ONNX Runtime made, not from the options we passed."""
    import onnxruntime as ort

    from xretrieve.encoding.ort_backend import ALLOW_SPINNING, OrtOptions, physical_cores

    encoder = load_encoder(tiny_xlmr_checkpoint, device="cpu")
    applied = encoder.backend.session.get_session_options()
    assert applied.intra_op_num_threads == physical_cores()
    assert applied.inter_op_num_threads == 1
    assert applied.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert applied.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert applied.enable_cpu_mem_arena and applied.enable_mem_pattern
    assert applied.get_session_config_entry(ALLOW_SPINNING) == "0"
    spinning = load_encoder(
        tiny_xlmr_checkpoint, device="cpu", ort_options=OrtOptions(cpu_spinning=True)
    )
    assert (
        spinning.backend.session.get_session_options().get_session_config_entry(ALLOW_SPINNING)
        == "1"
    )


def test_cpu_length_buckets_do_not_change_embeddings(tiny_xlmr_checkpoint: Path) -> None:
    from xretrieve.encoding.batching import LengthBuckets
    from xretrieve.encoding.ort_backend import OrtOptions

    texts = TEXTS * 3
    default = load_encoder(tiny_xlmr_checkpoint, device="cpu")
    assert default.buckets == LengthBuckets()  # the CPU's default
    unbucketed = load_encoder(
        tiny_xlmr_checkpoint, device="cpu", ort_options=OrtOptions(cpu_buckets=None)
    )
    assert unbucketed.buckets is None
    narrow = load_encoder(
        tiny_xlmr_checkpoint,
        device="cpu",
        ort_options=OrtOptions(cpu_buckets=LengthBuckets(max_tokens=40, max_padding=0.0)),
    )
    expected = unbucketed.encode(texts)
    for encoder in (default, narrow):
        np.testing.assert_allclose(encoder.encode(texts), expected, atol=1e-6)
    # Only equal lengths share a batch: no padding at all; without buckets there is some.
    assert narrow.last_stats.padding_efficiency == 1.0
    assert unbucketed.last_stats.padding_efficiency < 1.0
    assert narrow.last_stats.batches > unbucketed.last_stats.batches


def test_ort_options_check_the_cpu_settings() -> None:
    from xretrieve.encoding.ort_backend import OrtOptions

    with pytest.raises(XRetrieveError, match="cpu_buckets"):
        OrtOptions(cpu_buckets=2048)  # type: ignore[arg-type]
    with pytest.raises(XRetrieveError, match="cpu_spinning"):
        OrtOptions(cpu_spinning="no")  # type: ignore[arg-type]
