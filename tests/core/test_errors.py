"""Every ``XRetrieveError`` subclass, in ``xretrieve`` and in ``exporters``, survives pickling with
its message and attributes: Ray sends an error raised in an actor or task to the driver pickled,
and one that cannot be rebuilt arrives as Ray's ``UnserializableException`` (a traceback and exit
code 1 instead of one line and exit code 2)."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from pathlib import Path

import pytest

import exporters
import xretrieve
from xretrieve.core.errors import InputError, XRetrieveError


def _all_subclasses() -> set[type[XRetrieveError]]:
    for package in (xretrieve, exporters):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    found: set[type[XRetrieveError]] = set()
    todo = [XRetrieveError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def _examples() -> dict[str, list[XRetrieveError]]:
    """One or more instances of each error class, by qualified name: a new subclass needs an
    entry here (the test below says so)."""
    from exporters.optimize import FusionError
    from exporters.validate import ExportValidationError, ValidationFigures, ValidationReport
    from xretrieve.core.errors import ArgumentError, MissingDependencyError
    from xretrieve.encoding.ort_backend import CudaProviderUnavailable

    figures = ValidationFigures(0.5, 0.9, 0.1, (3, 9), (8, 3), "CPUExecutionProvider")
    report = ValidationReport(figures, ("cosine too low",))
    examples: list[XRetrieveError] = [
        XRetrieveError("plain message"),
        InputError(Path("data/in.txt"), "invalid UTF-8", line=7),
        InputError("in.txt", "cannot read: No such file or directory"),
        InputError(None, "no path"),
        MissingDependencyError("faiss-cpu", "--engine faiss"),
        ArgumentError("k", "must be an integer >= 1, not 2.5"),
        ArgumentError.from_template("give both {src_file} and {tgt_file}"),
        InputError("out.npy", "{out} is an input", arguments=("out",)),
        XRetrieveError("retry with {device='cpu'}", arguments=("device",)),
        CudaProviderUnavailable("CUDAExecutionProvider could not be loaded"),
        FusionError("fused 1 of 2 attention blocks"),
        ExportValidationError(["cosine too low", "shape differs"], report),
        ExportValidationError(["no batch ran"], None),
    ]
    by_class: dict[str, list[XRetrieveError]] = {}
    for error in examples:
        name = f"{type(error).__module__}.{type(error).__qualname__}"
        by_class.setdefault(name, []).append(error)
    return by_class


def test_every_error_class_has_an_example() -> None:
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in _all_subclasses()}
    assert names == set(_examples()), "add an example of each new XRetrieveError subclass above"


@pytest.mark.parametrize("name", sorted(_examples()))
def test_errors_round_trip_through_pickle_with_their_attributes(name: str) -> None:
    for error in _examples()[name]:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            copy = pickle.loads(pickle.dumps(error, protocol=protocol))
            assert type(copy) is type(error)
            assert str(copy) == str(error) and copy.args == error.args
            assert vars(copy) == vars(error)
