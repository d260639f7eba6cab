"""README.md and docs/*.md: every relative link reaches a file (and heading), every module path
and dotted name they cite exists, the README stays a front door of at most 250 lines, and its
test command is the one CI runs. benchmarks/RESULTS.md is checked for paths and names too."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITING = [*PAGES, ROOT / "benchmarks" / "RESULTS.md"]
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Paths into the repository, as prose and code cite them (not `~/.cache/xretrieve/...`).
REPO_PATH = re.compile(
    r"(?<![\w./~$<-])((?:xretrieve|exporters|tests|benchmarks|docs)/[\w./{},*-]*)"
)
DOTTED = re.compile(r"(?<![\w./-])((?:xretrieve|exporters)(?:\.[A-Za-z_]\w*)+)")
NOT_NAMES = {"xretrieve.json"}  # a checkpoint's settings file, not a module


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _without_code(text: str) -> str:
    """``text`` without fenced blocks and inline code spans (links there are not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed but
    hyphens and underscores, spaces turned into hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings, duplicates numbered as GitHub numbers them."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def _expand(path: str) -> list[str]:
    """``a.{b,c}`` -> ``a.b``, ``a.c`` (one brace group, as the pages write file families)."""
    group = re.search(r"\{([^{}]*)\}", path)
    if not group:
        return [path]
    return [
        path[: group.start()] + part + path[group.end() :] for part in group.group(1).split(",")
    ]


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(_without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: {_page_id(resolved)} has no heading #{anchor}")
    assert not broken, f"{_page_id(page)}:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", CITING, ids=_page_id)
def test_cited_repository_paths_exist(page: Path) -> None:
    missing = []
    for cited in sorted(set(REPO_PATH.findall(page.read_text(encoding="utf-8")))):
        cited = cited.rstrip(".,")
        if "*" in cited or "..." in cited:
            continue
        missing += [path for path in _expand(cited) if not (ROOT / path).exists()]
    assert not missing, f"{_page_id(page)} cites paths that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                try:
                    target = importlib.import_module(f"{target.__name__}.{name}")
                    continue
                except (ImportError, AttributeError):
                    return False
            target = getattr(target, name)
        return True
    return False


@pytest.mark.parametrize("page", CITING, ids=_page_id)
def test_cited_dotted_names_exist(page: Path) -> None:
    cited = set(DOTTED.findall(page.read_text(encoding="utf-8"))) - NOT_NAMES
    missing = sorted(name for name in cited if not _resolves(name))
    assert not missing, f"{_page_id(page)} cites names that do not exist: {missing}"


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference text to docs/"
    )


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2, "README.md's set-up section must keep its two commands"
    assert commands[0].endswith("&& xretrieve mine --src de --tgt en")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci, ".ci/run must run exactly the README's test command"


def test_the_link_checker_sees_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A page\n\n## `xretrieve mine` (flags)\n", encoding="utf-8")
    assert anchors(tmp_path / "a.md") == {"a-page", "xretrieve-mine-flags"}
    assert slug("Config reference (TOML or YAML; defaults shown)") == (
        "config-reference-toml-or-yaml-defaults-shown"
    )
    assert _resolves("xretrieve.mining.margin.Mode") and not _resolves("xretrieve.mining.Nope")
    assert not _resolves("xretrieve.knn_old")
