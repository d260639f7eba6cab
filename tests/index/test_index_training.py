"""Index defaults per device (a bounded CPU table, stopes' on a GPU), the training estimate
given before training, training in phases reported in order, and the same index as FAISS's own
``train``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import unit_rows

from xretrieve.core.errors import ArgumentError
from xretrieve.index import BuildConfig, TrainingEstimate, TrainingPhase, build_index
from xretrieve.index.factory import factory_structure, faiss_module, structure
from xretrieve.index.training import (
    MachineRates,
    default_factory,
    default_train_size,
    estimate_training,
    train_in_phases,
    training_phases,
)


def test_cpu_defaults_bound_the_lists_and_drop_opq() -> None:
    assert default_factory(10_000, 384, gpu=False) == ("Flat", "")
    factory, note = default_factory(1_000_000, 384, gpu=False)
    assert factory == "IVF4096,PQ64"
    assert "instead of stopes' OPQ64,IVF16384,PQ64" in note
    assert default_factory(50_000, 384, gpu=False)[0] == "IVF1024,PQ64"
    assert default_factory(600_000_000, 1024, gpu=False)[0] == "IVF4096,PQ64"
    assert default_factory(50_000, 48, gpu=False)[0] == "IVF1024,PQ48"
    # ~40 rows a list (FAISS advises 39), at least the PQ's 65536, at most the corpus.
    assert default_train_size(1_000_000, 4096, gpu=False) == 163_840
    assert default_train_size(50_000, 1024, gpu=False) == 50_000
    assert default_train_size(1_000_000, 1024, gpu=False) == 65_536


def test_gpu_defaults_are_stopes_table() -> None:
    assert default_factory(1_000_000, 384, gpu=True) == ("OPQ64,IVF16384,PQ64", "")
    assert default_factory(10_001, 1024, gpu=True) == ("OPQ64,IVF1024,PQ64", "")
    assert default_train_size(1_000_000, 16_384, gpu=True) == 1_000_000
    assert default_train_size(100_000_000, 131_072, gpu=True) == 13_107_200


def test_a_cpu_build_above_10k_rows_uses_the_cpu_default(tmp_path: Path) -> None:
    rows = unit_rows(np.random.default_rng(0).standard_normal((10_001, 8)))
    np.save(tmp_path / "rows.npy", rows.astype(np.float16))
    manifest = build_index([tmp_path / "rows.npy"], tmp_path / "i", BuildConfig(device="cpu"))
    assert manifest.factory == "IVF1024,PQ8" and manifest.train_size == 10_001
    assert manifest.factory_note.startswith("CPU default: IVF1024,PQ8 instead of stopes'")


@pytest.mark.gpu
def test_a_gpu_build_above_10k_rows_uses_stopes_default(tmp_path: Path) -> None:
    rows = unit_rows(np.random.default_rng(0).standard_normal((10_001, 64)))
    np.save(tmp_path / "rows.npy", rows.astype(np.float16))
    manifest = build_index([tmp_path / "rows.npy"], tmp_path / "i", BuildConfig(device="cuda"))
    assert manifest.factory == "OPQ64,IVF1024,PQ64" and manifest.factory_note == ""


@pytest.fixture()
def rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.npy"
    np.save(path, unit_rows(np.random.default_rng(1).standard_normal((10_000, 16))))
    return path


def test_the_estimate_comes_before_training_and_phases_in_order(
    tmp_path: Path, rows_file: Path
) -> None:
    events: list[tuple[str, int, int | None]] = []
    estimates: list[TrainingEstimate] = []

    def on_estimate(estimate: TrainingEstimate) -> None:
        estimates.append(estimate)
        events.append(("estimate", 0, None))

    config = BuildConfig(factory="OPQ4,IVF16,PQ4", device="cpu")
    build_index(
        [rows_file], tmp_path / "i", config, progress=lambda *e: events.append(e),
        on_estimate=on_estimate,
    )  # fmt: skip
    stages = list(dict.fromkeys(stage for stage, _, _ in events))
    assert stages == [
        "check sources", "hash sources", "estimate", "sample", "OPQ", "coarse k-means", "PQ",
        "add to index",
    ]  # fmt: skip
    kmeans = [(done, total) for stage, done, total in events if stage == "coarse k-means"]
    assert kmeans == [(i, 10) for i in range(11)]  # FAISS's 10 iterations, one report each
    assert [done for stage, done, _ in events if stage == "OPQ"] == list(range(51))
    (estimate,) = estimates
    assert estimate.factory == "OPQ4,IVF16,PQ4" and estimate.train_size == 10_000
    assert [phase for phase, _ in estimate.phases] == [
        TrainingPhase.OPQ, TrainingPhase.KMEANS, TrainingPhase.PQ
    ]  # fmt: skip
    assert all(seconds > 0 for _, seconds in estimate.phases) and estimate.add_seconds > 0
    assert estimate.describe().startswith("training OPQ4,IVF16,PQ4 on 10,000 rows (CPU): ")


def test_a_flat_index_is_not_trained_and_has_no_estimate(tmp_path: Path, rows_file: Path) -> None:
    estimates: list[TrainingEstimate] = []
    events: list[str] = []
    build_index(
        [rows_file], tmp_path / "i", BuildConfig(factory="Flat"),
        progress=lambda stage, *_: events.append(stage), on_estimate=estimates.append,
    )  # fmt: skip
    assert estimates == [] and "sample" not in events


def test_explicit_factory_and_train_size_keep_their_meaning(
    tmp_path: Path, rows_file: Path
) -> None:
    faiss = faiss_module()
    config = BuildConfig(factory="OPQ4,IVF16,PQ4", train_size=3000, seed=2, device="cpu")
    manifest = build_index([rows_file], tmp_path / "i", config)
    assert manifest.factory == "OPQ4,IVF16,PQ4" and manifest.train_size == 3000
    shard = faiss.read_index(str(tmp_path / "i" / manifest.shards[0].file))
    assert structure(shard) == factory_structure("OPQ4,IVF16,PQ4", 16) and manifest.lists == 16
    # An explicit factory without --train-size: the device's default sample.
    manifest = build_index(
        [rows_file], tmp_path / "j", BuildConfig(factory="IVF16,PQ4", device="cpu")
    )
    assert manifest.train_size == 10_000


def test_device_outside_the_vocabulary_is_refused() -> None:
    with pytest.raises(ArgumentError, match=r"unknown device 'gpu'.*auto, cuda, cpu"):
        BuildConfig(device="gpu")
    assert BuildConfig(device="cpu").device.value == "cpu"


@pytest.fixture()
def one_thread():
    """FAISS on one thread: OpenMP threads spinning on a shared machine slow these tests down
    many times (they compare results, not speed)."""
    faiss = faiss_module()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def _short_opq(index) -> None:
    faiss = faiss_module()
    typed = faiss.downcast_index(index)
    if isinstance(typed, faiss.IndexPreTransform):
        faiss.downcast_VectorTransform(typed.chain.at(0)).niter = 4


@pytest.mark.parametrize("factory", ["IVF32,PQ4x4", "OPQ4,IVF32,PQ4x4", "IVF32,Flat", "PQ4x4"])
def test_training_in_phases_is_as_good_as_faiss_train(factory: str, one_thread) -> None:
    faiss = faiss_module()
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((64, 16))
    x = unit_rows(centres[rng.integers(0, 64, 4000)] + 0.5 * rng.standard_normal((4000, 16)))
    ours = faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)
    _short_opq(ours)
    phases = training_phases(ours)
    steps: list[TrainingPhase] = []
    train_in_phases(ours, x, False, lambda phase, done, total: steps.append(phase))
    assert [TrainingPhase.SAMPLE, *dict.fromkeys(steps)] == list(phases)
    theirs = faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)
    _short_opq(theirs)
    theirs.train(x)
    assert ours.is_trained
    queries = x[:500]
    exact = faiss.IndexFlatIP(16)
    exact.add(x)
    _, want = exact.search(queries, 10)
    recall = {}
    for name, index in (("ours", ours), ("theirs", theirs)):
        index.add(x)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = 4
        _, got = index.search(queries, 10)
        recall[name] = np.mean([len(set(a) & set(b)) for a, b in zip(got, want, strict=True)])
    assert recall["ours"] >= 0.97 * recall["theirs"], recall


def test_the_estimate_follows_faiss_iterations_and_sizes() -> None:
    faiss = faiss_module()
    rates = MachineRates(gemm=1e-10, pq=1e-9, encode=1e-5)
    index = faiss.index_factory(384, "IVF4096,PQ64", faiss.METRIC_INNER_PRODUCT)
    estimate = estimate_training(index, "IVF4096,PQ64", 163_840, 1_000_000, rates, False)
    phases = dict(estimate.phases)
    # 10 iterations x 163840 rows x 4096 lists x 384 x 2 flops; PQ: 25 x 64 x 65536 x 256 x 6 x 2.
    assert phases[TrainingPhase.KMEANS] == pytest.approx(10 * 163_840 * 4096 * 384 * 2 * 1e-10)
    assert phases[TrainingPhase.PQ] == pytest.approx(25 * 64 * 65_536 * 256 * 6 * 2 * 1e-9)
    want_add = 1_000_000 * (4096 * 384 * 2 * 1e-10 + 1e-5)
    assert estimate.add_seconds == pytest.approx(want_add)
    assert TrainingEstimate.from_json(estimate.to_json()) == estimate
