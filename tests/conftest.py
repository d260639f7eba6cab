"""Markers: ``gpu`` tests run only where a CUDA GPU is usable; ``slow`` ones only with --runslow.

Shared fixtures: the tiny random checkpoints (``tiny_xlmr_checkpoint``, ``tiny_bert_checkpoint``,
built once per session), planted BUCC data with embeddings (``planted_bucc``), and
``one_torch_thread`` for modules that train tiny models. The helper modules beside this file
build the rest: ``tiny_models``, ``mining_fixtures`` (planted pairs), ``trainer_data`` (task data
and ``run_config``), ``evaluation_data``, ``xtreme_cases``."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


@functools.cache
def gpu_available() -> bool:
    from xretrieve.core.devices import torch_cuda_available

    return torch_cuda_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "gpu" in item.keywords and not gpu_available():
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def tiny_xlmr_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A random 2-layer, 32-wide XLM-R checkpoint with a real fast tokenizer (built once)."""
    from tiny_models import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-xlmr"), "xlm-roberta")


@pytest.fixture(scope="session")
def tiny_bert_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A random 2-layer, 32-wide BERT checkpoint with a real fast WordPiece tokenizer."""
    from tiny_models import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): tiny
    models run faster on one thread than on two contended ones. Restores the count after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def planted_bucc(tmp_path: Path):
    """``(root, split)``: BUCC de-en splits ``test`` (``split``, whose last source line repeats
    a gold source's text under a new id) and ``training`` under ``root/data``, with their
    embeddings mirrored under ``root/emb`` (``mining_fixtures.split_files`` names the files)."""
    from mining_fixtures import write_planted_split

    split = write_planted_split(tmp_path / "data", tmp_path / "emb", "test", duplicate_src=True)
    write_planted_split(tmp_path / "data", tmp_path / "emb", "training", seed=5)
    return tmp_path, split


@pytest.fixture(scope="session")
def st_folder(tmp_path_factory: pytest.TempPathFactory):
    """``st_folder(name)``: the tiny sentence-transformers folder ``st_models.ST_CASES[name]``,
    saved by sentence-transformers and built once per session (copy it before changing it)."""
    from st_models import ST_CASES, make_st_folder

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = make_st_folder(tmp_path_factory.mktemp("st") / name, **ST_CASES[name])
        return built[name]

    return get
