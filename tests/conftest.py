"""Markers: ``gpu`` tests run only where a CUDA GPU is usable; ``slow`` ones only with --runslow."""

from __future__ import annotations

import functools

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
