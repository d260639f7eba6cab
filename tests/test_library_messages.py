"""Library errors name parameters, never the CLI's options: no string inside a ``raise`` statement
or an error's construction (a call of a name ending in ``Error``, ``ArgumentError.from_template``
and the like) in ``xretrieve`` (but ``xretrieve/cli``) or ``exporters`` holds a ``--flag``. The
library writes ``{name}`` for a parameter and the CLI shows its option (``reports_errors``).
Docstrings and comments may mention the CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A CLI option: two dashes and a lower-case word, not inside another word (``models--org``).
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _is_error_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    names = []
    while isinstance(func, ast.Attribute):
        names.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        names.append(func.id)
    return any(name.endswith("Error") for name in names)


def flags_in_errors(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """``(line, text)`` of each string part (f-strings included) of a ``raise`` statement or an
    error's construction that holds a ``--flag``."""
    found = {}
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Raise) or _is_error_call(node)):
            continue
        for part in ast.walk(node):
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                if FLAG.search(part.value):
                    found[(part.lineno, part.value)] = None
    return sorted(found)


def _library_modules() -> list[Path]:
    paths = sorted((ROOT / "exporters").rglob("*.py"))
    for path in sorted((ROOT / "xretrieve").rglob("*.py")):
        if path.relative_to(ROOT / "xretrieve").parts[0] != "cli":
            paths.append(path)
    return paths


def test_no_library_error_names_a_cli_option() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _library_modules()
        for line, text in flags_in_errors(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not offenders, "name the parameter ({name}) instead:\n" + "\n".join(offenders)


def test_the_check_finds_a_flag_in_each_kind_of_error() -> None:
    source = """
def f(path, size):
    if size:
        raise XRetrieveError(f"--train-size {size} is too large")
    if path:
        raise InputError(path, "give " + "--out too")
    error = ArgumentError("k", "must be positive: lower --k")
    other = ArgumentError.from_template("give both {src_file} and --tgt-file")
    raise ValueError("see --help")
"""
    found = flags_in_errors(source)
    assert [line for line, _ in found] == [4, 6, 7, 8, 9]
    clean = '''
def f(path):
    """Run with ``--out``."""  # a docstring may name the CLI
    message = "models--org--name"  # a hub folder, not a flag
    raise ArgumentError.from_template("give both {src_file} and {tgt_file}")
'''
    assert flags_in_errors(clean) == []
