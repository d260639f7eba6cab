"""The default index for a device, and training an empty FAISS index in phases that report
progress, after an estimate of how long they take.

Defaults (``default_factory``, ``default_train_size``): on a GPU, stopes' table
(``mining_utils.determine_faiss_index_type``): ``Flat`` up to 10k rows, else
``OPQ64,IVF{N},PQ64`` with N by size, trained on ~100 rows per list. On a CPU the same up to the
IVF, but without OPQ (FAISS trains its rotation by retraining the PQ 50 times, minutes to hours
on a few cores, and the exact re-scoring of candidates makes up what it adds: benchmarks/RESULTS.md)
and with at most ``CPU_MAX_LISTS`` lists on ~40 rows each (the coarse k-means costs
rows x lists x dimension per iteration, and adding costs rows x lists x dimension once).

Phases (``TrainingPhase``, in this order, each present only where the index has it): the seeded
sample is read; the transforms of an ``IndexPreTransform`` are trained (OPQ one FAISS iteration
at a time, with the rotation and its PQ carried over, as FAISS's own loop does); the coarse
quantizer of an IVF index is trained by FAISS's k-means one iteration at a time (each step
starts from the centroids of the last, which is what FAISS's loop does); then FAISS trains what
remains (the PQ on residuals) in one call. PQ training is never polysemous: xretrieve never
searches with Hamming thresholds, and the polysemous permutation alone took longer than all the
rest of a CPU training (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from xretrieve.index.factory import faiss_module

# stopes' mining_utils.determine_faiss_index_type: IVF lists by sentence count; Flat at or below
# 10k sentences (IVF k-means fails or is pointless with so few points).
FLAT_MAX_ROWS = 10_000
IVF_LISTS_BY_ROWS = (
    (500_000_000, 262_144),
    (100_000_000, 131_072),
    (10_000_000, 65_536),
    (4_000_000, 32_768),
    (700_000, 16_384),
    (250_000, 8_192),
    (160_000, 4_096),
    (80_000, 2_048),
    (FLAT_MAX_ROWS, 1_024),
)
STOPES_PQ = 64
# FAISS warns below 39 training points per centroid; the GPU default gives ~100 per list
# (FAISS's k-means subsamples above 256 per centroid anyway), at least 2^16 rows (FAISS trains
# the PQ on up to 256 x 256 rows).
TRAIN_POINTS_PER_LIST = 100
MIN_DEFAULT_TRAIN = 1 << 16
FAISS_ADVISED_PER_CENTROID = 39
# CPU: a k-means iteration on 4096 lists x 40 rows each at dimension 384 is 0.5 TFLOP (about
# 15 s on two loaded cores); 16384 lists (stopes' 1M-row choice) would be 16 times that, and
# adding a million rows 4 times slower.
CPU_MAX_LISTS = 4_096
CPU_TRAIN_POINTS_PER_LIST = 40
# Floating-point work of a probe measuring the machine's rate (about 0.1 s on two cores).
PROBE_FLOPS = 4e9


class TrainingPhase(str, enum.Enum):
    """The steps of training, in the order they run; the value is the progress stage."""

    SAMPLE = "sample"  # reading the seeded training sample (rows)
    TRANSFORM = "transform"  # a transform other than OPQ (PCA, ...): one step
    OPQ = "OPQ"  # the OPQ rotation (FAISS iterations)
    KMEANS = "coarse k-means"  # the IVF coarse quantizer (k-means iterations)
    PQ = "PQ"  # the product quantizer (on IVF residuals): one step
    ENCODER = "train encoder"  # another encoder (SQ, LSQ, ...): one step


class EstimateCallback(Protocol):
    """Called once, before training starts, with the estimate of the time it takes."""

    def __call__(self, estimate: TrainingEstimate) -> None: ...


@dataclass(frozen=True)
class TrainingEstimate:
    """How long training ``factory`` on ``train_size`` rows should take here (``phases``:
    ``(phase, seconds)`` in order) and adding ``rows`` rows after it (``add_seconds``), from the
    rates probes measured on this machine just before; ``gpu``: the coarse k-means runs on a GPU."""

    factory: str
    train_size: int
    rows: int
    gpu: bool
    phases: tuple[tuple[TrainingPhase, float], ...]
    add_seconds: float

    @property
    def training_seconds(self) -> float:
        return sum(seconds for _, seconds in self.phases)

    def describe(self) -> str:
        """One line for a user: the total, then each phase."""
        parts = ", ".join(f"{phase.value} {_duration(seconds)}" for phase, seconds in self.phases)
        where = "GPU" if self.gpu else "CPU"
        return (
            f"training {self.factory} on {self.train_size:,} rows ({where}): estimated "
            f"{_duration(self.training_seconds)} ({parts}); adding {self.rows:,} rows: "
            f"estimated {_duration(self.add_seconds)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "factory": self.factory,
            "train_size": self.train_size,
            "rows": self.rows,
            "gpu": self.gpu,
            "phases": [[phase.value, seconds] for phase, seconds in self.phases],
            "add_seconds": self.add_seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingEstimate:
        phases = tuple((TrainingPhase(name), float(s)) for name, s in data["phases"])
        return cls(
            data["factory"], data["train_size"], data["rows"], data["gpu"], phases,
            float(data["add_seconds"]),
        )  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def pq_subquantizers(dim: int) -> int:
    """stopes' 64 sub-quantizers when 64 divides ``dim``, else the largest divisor of ``dim``
    not above 64 (PQ and OPQ need ``dim % M == 0``)."""
    return max(m for m in range(1, min(dim, STOPES_PQ) + 1) if dim % m == 0)


def stopes_lists(count: int) -> int:
    """stopes' IVF list count for ``count`` rows (above ``FLAT_MAX_ROWS``)."""
    return next(n for rows, n in IVF_LISTS_BY_ROWS if count > rows)


def default_factory(count: int, dim: int, gpu: bool = True) -> tuple[str, str]:
    """``(factory, note)`` for ``count`` rows of dimension ``dim``: ``Flat`` up to 10k rows;
    above, on a GPU stopes' ``OPQ64,IVF{N},PQ64`` with N from the row count, on a CPU
    ``IVF{min(N, 4096)},PQ64``. ``note`` says how the choice differs from stopes' (empty when it
    does not)."""
    if count <= FLAT_MAX_ROWS:
        return "Flat", ""
    lists = stopes_lists(count)
    m = pq_subquantizers(dim)
    notes = []
    if m != STOPES_PQ:
        notes.append(
            f"PQ{m} instead of stopes' PQ64: 64 does not divide dimension {dim}; "
            f"{m} is its largest divisor up to 64"
        )
    if gpu:
        return f"OPQ{m},IVF{lists},PQ{m}", "; ".join(notes)
    cpu_lists = min(lists, CPU_MAX_LISTS)
    notes.insert(
        0,
        f"CPU default: IVF{cpu_lists},PQ{m} instead of stopes' OPQ{m},IVF{lists},PQ{m} "
        "(no OPQ; at most 4096 lists; --factory chooses another)",
    )
    return f"IVF{cpu_lists},PQ{m}", "; ".join(notes)


def default_train_size(count: int, lists: int, gpu: bool = True) -> int:
    """Training sample: on a GPU ~100 rows per inverted list, on a CPU ~40 (FAISS advises 39);
    at least 2^16 rows (the PQ's sample), at most the corpus."""
    per_list = TRAIN_POINTS_PER_LIST if gpu else CPU_TRAIN_POINTS_PER_LIST
    return min(count, max(per_list * lists, MIN_DEFAULT_TRAIN))


# ---- the phases of an empty index ---------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    """What training ``index`` involves: its untrained ``transforms`` (FAISS objects, in order),
    the ``inner`` index after them, its IVF whose coarse k-means xretrieve runs (None without,
    or when FAISS trains the quantizer itself, e.g. HNSW or IMI), the ``encoder`` (the IVF
    index, else ``inner``) and the last phase (PQ, ENCODER or None)."""

    transforms: tuple[Any, ...]
    inner: Any
    ivf: Any
    encoder: Any
    last: TrainingPhase | None


def _parts(index) -> _Parts:
    faiss = faiss_module()
    typed = faiss.downcast_index(index)
    transforms: list[Any] = []
    if isinstance(typed, faiss.IndexPreTransform):
        for i in range(typed.chain.size()):
            transform = faiss.downcast_VectorTransform(typed.chain.at(i))
            if not transform.is_trained:
                transforms.append(transform)
        typed = faiss.downcast_index(typed.index)
    found = faiss.try_extract_index_ivf(typed)
    found = faiss.downcast_index(found) if found is not None else None
    ivf = None
    if found is not None and _trains_alone(found) == 0:
        quantizer = faiss.downcast_index(found.quantizer)
        if isinstance(quantizer, faiss.IndexFlat) and quantizer.ntotal == 0:
            ivf = found
    encoder = found if found is not None else typed
    if typed.is_trained or isinstance(encoder, faiss.IndexIVFFlat):
        last = None
    elif found is not None and ivf is None:
        last = TrainingPhase.ENCODER  # FAISS trains its own quantizer (HNSW, IMI) with the rest
    elif getattr(encoder, "pq", None) is not None:
        last = TrainingPhase.PQ
    else:
        last = TrainingPhase.ENCODER
    return _Parts(tuple(transforms), typed, ivf, encoder, last)


def _trains_alone(ivf) -> int:
    """``ivf.quantizer_trains_alone`` as a number (SWIG gives this ``char`` as a string)."""
    value = ivf.quantizer_trains_alone
    return ord(value) if isinstance(value, str) else int(value)


def _transform_phase(transform) -> TrainingPhase:
    return (
        TrainingPhase.OPQ
        if isinstance(transform, faiss_module().OPQMatrix)
        else (TrainingPhase.TRANSFORM)
    )


def training_phases(index) -> tuple[TrainingPhase, ...]:
    """The phases training the empty ``index`` goes through, in order (SAMPLE first)."""
    parts = _parts(index)
    phases = [TrainingPhase.SAMPLE]
    phases += [_transform_phase(t) for t in parts.transforms]
    if parts.ivf is not None:
        phases.append(TrainingPhase.KMEANS)
    if parts.last is not None:
        phases.append(parts.last)
    return tuple(dict.fromkeys(phases))


def prepare_for_training(index) -> None:
    """Settings of FAISS's training that xretrieve changes: no polysemous PQ training."""
    encoder = _parts(index).encoder
    if hasattr(encoder, "do_polysemous_training"):
        encoder.do_polysemous_training = False


# ---- the estimate --------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineRates:
    """Measured here: seconds per floating-point operation of an exhaustive inner-product
    search of dimension ``dim`` (GEMM-shaped: k-means assignment, coarse quantisation) and of
    one 256-centroid k-means iteration of the PQ's sub-vector size (low-dimensional, far slower
    per operation); seconds to PQ-encode one row (``encode``; 0 without a PQ)."""

    gemm: float
    pq: float
    encode: float = 0.0


def _timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure_rates(
    dim: int, lists: int, subquantizers: int, gpu: bool, seed: int = 0
) -> MachineRates:
    """Probe the machine for ``MachineRates`` with random data: an inner-product search of
    ``PROBE_FLOPS`` against ``lists`` centroids (on the GPU when ``gpu``), two iterations of a
    256-centroid k-means on sub-vectors of ``dim / subquantizers`` dimensions, and encoding
    rows with a PQ of ``subquantizers`` x 8 bits (random codebooks: the cost does not depend
    on them)."""
    faiss = faiss_module()
    rng = np.random.default_rng(seed)
    centroids = max(lists, 256)
    queries = int(np.clip(PROBE_FLOPS / (2 * centroids * dim), 256, 65_536))
    data = rng.standard_normal((queries + centroids, dim), dtype=np.float32)
    index = _flat_index(dim, faiss.METRIC_INNER_PRODUCT, gpu)
    index.add(data[:centroids])
    index.search(data[centroids : centroids + 64], 1)  # warm-up (GPU initialisation)
    gemm = _timed(lambda: index.search(data[centroids:], 1)) / (2 * queries * centroids * dim)
    dsub = dim // subquantizers
    points = 65_536
    sub = rng.standard_normal((points, dsub), dtype=np.float32)
    params = faiss.ClusteringParameters()
    params.niter = 2
    clustering = faiss.Clustering(dsub, 256, params)
    seconds = _timed(lambda: clustering.train(sub, faiss.IndexFlatL2(dsub)))
    pq = seconds / (2 * 2 * points * 256 * dsub)
    quantizer = faiss.ProductQuantizer(dim, subquantizers, 8)
    codebooks = rng.standard_normal(subquantizers * 256 * dsub, dtype=np.float32)
    faiss.copy_array_to_vector(codebooks, quantizer.centroids)
    rows = min(queries, 4096)
    encode = _timed(lambda: quantizer.compute_codes(data[centroids : centroids + rows])) / rows
    return MachineRates(gemm, pq, encode)


def estimate_training(
    index, factory: str, train_size: int, rows: int, rates: MachineRates, gpu: bool
) -> TrainingEstimate:
    """The seconds each phase of training the empty ``index`` on ``train_size`` rows should take
    at ``rates`` (FAISS's own iteration counts and sample caps), and adding ``rows`` rows. The
    sample read is not estimated (it is shown as it goes)."""
    parts = _parts(index)
    dim = int(index.d)
    phases: list[tuple[TrainingPhase, float]] = []
    for transform in parts.transforms:
        phase = _transform_phase(transform)
        if phase is TrainingPhase.OPQ:
            n = min(train_size, int(transform.max_train_points))
            dsub = transform.d_out // transform.M
            pq_iterations = transform.niter_pq_0 + transform.niter_pq * (transform.niter - 1)
            pq_flops = 2 * pq_iterations * transform.M * n * 256 * dsub
            gemm_flops = 4 * transform.niter * n * dim * transform.d_out
            seconds = pq_flops * rates.pq + gemm_flops * rates.gemm
        else:
            seconds = 2 * train_size * dim * int(transform.d_out) * rates.gemm
        phases.append((phase, seconds))
    lists, coarse_dim = 0, dim
    if parts.ivf is not None:
        lists, coarse_dim = int(parts.ivf.nlist), int(parts.ivf.d)
        n = min(train_size, lists * int(parts.ivf.cp.max_points_per_centroid))
        flops = 2 * int(parts.ivf.cp.niter) * n * lists * coarse_dim
        phases.append((TrainingPhase.KMEANS, flops * rates.gemm))
    pq = getattr(parts.encoder, "pq", None)
    encode = 0.0
    if parts.last is TrainingPhase.PQ and pq is not None:
        n = min(train_size, int(pq.cp.max_points_per_centroid) * int(pq.ksub))
        flops = 2 * int(pq.cp.niter) * int(pq.M) * n * int(pq.ksub) * int(pq.dsub)
        phases.append((TrainingPhase.PQ, flops * rates.pq))
        encode = rates.encode
    elif parts.last is TrainingPhase.ENCODER:
        phases.append((TrainingPhase.ENCODER, 2 * train_size * dim * 256 * rates.gemm))
    add = rows * (2 * lists * coarse_dim * rates.gemm + encode)
    return TrainingEstimate(factory, train_size, rows, gpu, tuple(phases), add)


# ---- training in phases --------------------------------------------------------------------


class PhaseReport(Protocol):
    """Called as training advances: the phase, the steps done and the steps it has."""

    def __call__(self, phase: TrainingPhase, done: int, total: int) -> None: ...


def _flat_index(dim: int, metric: int, gpu: bool):
    faiss = faiss_module()
    if gpu:
        resources = faiss.StandardGpuResources()
        kind = (
            faiss.GpuIndexFlatIP if metric == faiss.METRIC_INNER_PRODUCT else faiss.GpuIndexFlatL2
        )
        index = kind(resources, dim)
        index.referenced_resources = resources  # kept alive as long as the index
        return index
    return faiss.IndexFlat(dim, metric)


def _train_opq(opq, x: np.ndarray, report: PhaseReport) -> None:
    """FAISS's OPQ training one outer iteration per call: the rotation found so far (``A``) and
    the PQ (hot-started after the first iteration, as FAISS's loop does) carry over."""
    faiss = faiss_module()
    iterations, first = int(opq.niter), int(opq.niter_pq_0)
    pq = faiss.ProductQuantizer(int(opq.d_out), int(opq.M), 8)
    opq.pq = pq
    report(TrainingPhase.OPQ, 0, iterations)
    try:
        for i in range(iterations):
            opq.niter = 1
            opq.niter_pq_0 = first if i == 0 else int(opq.niter_pq)
            opq.train(x)
            report(TrainingPhase.OPQ, i + 1, iterations)
    finally:
        opq.pq = None
        opq.niter, opq.niter_pq_0 = iterations, first


def _train_coarse(ivf, x: np.ndarray, gpu: bool, report: PhaseReport) -> None:
    """FAISS's k-means of the coarse quantizer (``ivf.cp``: iterations, spherical, seed), one
    iteration per call, each starting from the last one's centroids; the training rows are
    subsampled once, as FAISS does above ``max_points_per_centroid`` per list."""
    faiss = faiss_module()
    lists, iterations = int(ivf.nlist), int(ivf.cp.niter)
    limit = lists * int(ivf.cp.max_points_per_centroid)
    if x.shape[0] > limit:
        rng = np.random.default_rng(int(ivf.cp.seed))
        x = x[np.sort(rng.choice(x.shape[0], size=limit, replace=False))]
    params = faiss.ClusteringParameters()
    params.niter = 1
    params.spherical = bool(ivf.cp.spherical)
    params.seed = int(ivf.cp.seed)
    params.max_points_per_centroid = x.shape[0]  # subsampled above
    params.min_points_per_centroid = 1  # the build warns once when the sample is small
    clustering = faiss.Clustering(int(ivf.d), lists, params)
    assign = _flat_index(int(ivf.d), int(ivf.metric_type), gpu)
    report(TrainingPhase.KMEANS, 0, iterations)
    for i in range(iterations):
        clustering.train(x, assign)
        report(TrainingPhase.KMEANS, i + 1, iterations)
    quantizer = ivf.quantizer
    quantizer.reset()
    quantizer.add(faiss.vector_to_array(clustering.centroids).reshape(lists, int(ivf.d)))
    quantizer.is_trained = True


def train_in_phases(index, sample: np.ndarray, gpu: bool, report: PhaseReport) -> None:
    """Train the empty ``index`` on ``sample`` ((n, d) float32, rows as the index takes them),
    phase by phase (``training_phases``), calling ``report`` as each advances; the coarse
    k-means assigns on the GPU when ``gpu``. The result is what ``index.train(sample)`` gives
    (up to FAISS's random choices) without polysemous PQ training."""
    faiss = faiss_module()
    prepare_for_training(index)
    parts = _parts(index)
    x = sample
    for transform in parts.transforms:
        phase = _transform_phase(transform)
        if phase is TrainingPhase.OPQ:
            _train_opq(transform, x, report)
        else:
            report(phase, 0, 1)
            transform.train(x)
            report(phase, 1, 1)
    typed = faiss.downcast_index(index)
    if isinstance(typed, faiss.IndexPreTransform):
        x = _apply_chain(typed, x)
    if parts.ivf is not None:
        _train_coarse(parts.ivf, x, gpu, report)
    if parts.last is not None:
        report(parts.last, 0, 1)
    parts.inner.train(x)
    if parts.last is not None:
        report(parts.last, 1, 1)
    if isinstance(typed, faiss.IndexPreTransform):
        typed.is_trained = True


def _apply_chain(index, x: np.ndarray) -> np.ndarray:
    """``x`` through the (trained) transforms of the ``IndexPreTransform`` ``index``."""
    faiss = faiss_module()
    for i in range(index.chain.size()):
        x = faiss.downcast_VectorTransform(index.chain.at(i)).apply(x)
    return np.ascontiguousarray(x, dtype=np.float32)
