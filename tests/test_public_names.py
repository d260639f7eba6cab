"""One name per thing: no public function or class name is defined at the top level of two
modules of ``xretrieve`` or ``exporters`` (the structure review found ``evaluate_bucc``,
``evaluate_tatoeba`` and ``mine`` each defined twice with different signatures, and CLI
callbacks named like the library functions they call). Private names (``_x``) may repeat."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("xretrieve", "exporters")


def public_definitions(root: Path = ROOT) -> dict[str, list[str]]:
    """Public top-level def/class name -> the files that define it."""
    found: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
                if isinstance(node, kinds) and not node.name.startswith("_"):
                    found[node.name].append(str(path.relative_to(root)))
    return found


def test_no_public_name_is_defined_twice() -> None:
    twice = {name: files for name, files in public_definitions().items() if len(files) > 1}
    assert twice == {}


def test_the_check_sees_a_name_defined_twice(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "xretrieve" / "a.py").write_text("def mine():\n    pass\n\ndef _x():\n    pass\n")
    (tmp_path / "exporters" / "b.py").write_text("class mine:\n    pass\n\ndef _x():\n    pass\n")
    names = public_definitions(tmp_path)
    assert names["mine"] == ["xretrieve/a.py", "exporters/b.py"] and "_x" not in names
