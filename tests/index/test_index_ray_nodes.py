"""Streamed mining on a two-node Ray cluster started as a user starts one (``ray start --head``
and ``ray start --address ... --resources``), on this machine: one CPU per node, so the two
shard actors sit one on each node, and both nodes search, write candidate blocks and score
parts; the pairs equal the single-process run's."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_index import planted_pair

from xretrieve.index import BuildConfig, SearchConfig, build_index, open_index
from xretrieve.mining.margin import MiningConfig, Mode
from xretrieve.mining.streaming import Streaming
from xretrieve.mining.through_index import mine_indexes

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

START_TIMEOUT_S = 180
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_start(*arguments: str, env: dict[str, str]) -> None:
    ray_cli = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "ray"
    command = [str(ray_cli) if ray_cli.is_file() else shutil.which("ray") or "ray", "start"]
    done = subprocess.run(
        [*command, *arguments, "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _stop_cluster(temp_dir: str) -> None:
    """End the processes of this cluster only (their command lines name its temp dir or its
    port), by id: ``ray stop`` would end every Ray cluster of the machine."""
    ours = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in part for part in process.info["cmdline"] or ()):
            ours.append(process)
    for process in ours:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(ours, timeout=15)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


@pytest.fixture(scope="module")
def two_nodes():
    temp_dir = tempfile.mkdtemp(prefix="xr-ray-")  # short: Ray's socket paths must fit
    port = _free_port()
    # Ray 2.5x turns token authentication on for a head when a token file exists
    # (~/.ray/auth_token, which a local ray.init writes) but not for the node joining it: one
    # mode for the three processes. The driver runs in a fresh process (``DRIVER``): a process
    # that ran a local cluster before keeps that cluster's authentication state.
    env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "tests" / "index"), str(ROOT / "tests")]
    )
    try:
        _ray_start(
            "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
            f"--temp-dir={temp_dir}", '--resources={"node_a": 1}', env=env,
        )  # fmt: skip
        address = f"127.0.0.1:{port}"
        _ray_start(
            f"--address={address}", "--num-cpus=1", '--resources={"node_b": 1}',
            f"--temp-dir={temp_dir}", env=env,
        )  # fmt: skip
        yield address, env
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


# Mines on the cluster at argv[1] with the indexes in argv[2]; writes the pairs and the nodes
# the shard actors ran on to argv[2]/ray.npz.
DRIVER = """
import sys
from pathlib import Path

import numpy as np
import ray

from xretrieve.index import SearchConfig, open_index
from xretrieve.index.distributed import RaySearch
from xretrieve.mining.margin import MiningConfig, Mode
from xretrieve.mining.streaming import StreamConfig
from xretrieve.mining.through_index import mine_indexes

address, root = sys.argv[1], Path(sys.argv[2])
src, tgt = open_index(root / "s"), open_index(root / "t")
search = RaySearch(address)
assert len([n for n in ray.nodes() if n["Alive"]]) == 2
nodes = set()

def note_nodes(stage, done, total):
    if stage.startswith("index search") and done == 1:
        nodes.update(ray.get([actor.node.remote() for actor in search.actors]))

work = StreamConfig(root / "work", part_rows=80, pairs_per_part=40, keep_candidates=True)
pairs = mine_indexes(
    src, tgt, MiningConfig(k=5, device="cpu", mode=Mode.MAX), SearchConfig(nprobe=2, block_rows=40),
    search=search, work=work, progress=note_nodes,
)
np.savez(root / "ray.npz", src=pairs.src_index, tgt=pairs.tgt_index, score=pairs.score,
         nodes=np.array(sorted(nodes)))
"""


def test_streamed_mining_on_two_nodes_equals_single_process_mining(two_nodes, tmp_path) -> None:
    address, env = two_nodes
    src_files, tgt_files, _, _ = planted_pair(tmp_path, n=300, d=16)
    config = BuildConfig(factory="IVF8,PQ4x4", train_size=250, shard_rows=160)
    build_index(src_files, tmp_path / "s", config)
    build_index(tgt_files, tmp_path / "t", config)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, address, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "ray.npz")
    src, tgt = open_index(tmp_path / "s"), open_index(tmp_path / "t")
    mining = MiningConfig(k=5, device="cpu", mode=Mode.MAX)
    want = mine_indexes(
        src, tgt, mining, SearchConfig(nprobe=2, block_rows=40), stream=Streaming.OFF
    )
    np.testing.assert_array_equal(got["src"], want.src_index)
    np.testing.assert_array_equal(got["tgt"], want.tgt_index)
    np.testing.assert_array_equal(got["score"], want.score)
    assert len(got["nodes"]) == 2  # an actor on each node
    work = tmp_path / "work"
    assert len(list(work.glob("fwd-block-*.npy"))) == 8
    assert json.loads((work / "pairs.json").read_text())["complete"]
