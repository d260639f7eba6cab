"""Searching memory-mapped embedding files keeps the resident memory at the size of the blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from xretrieve.knn.exact import knn_both_ways

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    engine, src_path, tgt_path = sys.argv[1:]
    dim = np.load(src_path, mmap_mode="r").shape[1]
    src = np.load(src_path, mmap_mode="r")
    tgt = np.load(tgt_path, mmap_mode="r")
    warm = np.eye(8, dim, dtype=np.float32)
    knn_both_ways(warm, warm, 2, device="cpu")  # load FAISS and BLAS buffers first
    if engine == "chunks":
        import torch
        from xretrieve.knn.chunk_search import ProductPrecision, chunk_knn_both_ways, plan_search
        from xretrieve.core.row_blocks import RowMatrix
        chunk_knn_both_ways(RowMatrix(warm), RowMatrix(warm), 2, 2, plan_search(
            8, 8, dim, 2, device="cpu", memory_budget=1 << 20, precision=ProductPrecision.FP16),
            normalize=True)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak resident size (VmHWM) to the current one
    before = status("VmRSS")
    if engine == "chunks":
        plan = plan_search(src.shape[0], tgt.shape[0], dim, 4, device="cpu",
                           memory_budget=24 << 20, precision=ProductPrecision.FP32)
        result = chunk_knn_both_ways(RowMatrix(src), RowMatrix(tgt), 4, 4, plan, normalize=True)
    else:
        result = knn_both_ways(src, tgt, 4, device="cpu", normalize=True, block_rows=8192)
    print(status("VmHWM") - before, int(result[3][:, 0].sum()))
    """
)


def write_files(folder: Path, rows: int, dim: int) -> tuple[Path, Path]:
    """A 2,000-row source and a ``rows`` x ``dim`` float32 target, written in parts."""
    rng = np.random.default_rng(0)
    np.save(folder / "src.npy", rng.standard_normal((2000, dim)).astype(np.float32))
    target = np.lib.format.open_memmap(folder / "tgt.npy", "w+", np.float32, (rows, dim))
    for start in range(0, rows, 50_000):
        stop = min(start + 50_000, rows)
        target[start:stop] = rng.standard_normal((stop - start, dim))
    target.flush()
    del target
    return folder / "src.npy", folder / "tgt.npy"


# FAISS on 400,000 x 64 (102 MB); the chunk engine, whose per-row candidate lists weigh more
# next to 64 dimensions, on 100,000 x 256 (102 MB).
@pytest.mark.parametrize(
    ("engine", "rows", "dim"), [("faiss", 400_000, 64), ("chunks", 100_000, 256)]
)
def test_peak_memory_stays_below_the_data(tmp_path: Path, engine: str, rows: int, dim: int) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure peak memory")
    src, tgt = write_files(tmp_path, rows, dim)
    # Large allocations straight from mmap and few malloc arenas: freed blocks leave the
    # resident set at once, so the peak measures what was live, not glibc's caching.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_ARENA_MAX="2")
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, engine, str(src), str(tgt)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    peak_growth, _ = map(int, result.stdout.split())
    data_bytes = rows * dim * 4
    # The answers alone take rows x 4 x 12 bytes; a whole copy would take all of data_bytes.
    assert peak_growth < 0.6 * data_bytes, f"peak grew by {peak_growth / 1e6:.0f} MB"
