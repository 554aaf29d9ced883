"""The README and the docs pages as a reader meets them: the README stays short, every link and anchor
resolves (mkdocs --strict checks the docs site's own links; nothing checks the README's but this), no
machine-specific path, every repository path a page names exists, every `make` target it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .markdown import DOCS, README, ROOT, anchors, blocks, links, pages

README_LIMIT = 15 * 1024


def test_the_readme_is_short():
    assert README.stat().st_size <= README_LIMIT, f"README.md is {README.stat().st_size} bytes"


def test_the_readme_links_resolve():
    seen = links(README)
    assert any(t.startswith("docs/") for t in seen)
    for target in seen:
        assert not target.startswith(("http://", "https://", "/")), f"README link {target}: keep links relative"
        path, _, anchor = target.partition("#")
        resolved = (README.parent / path) if path else README
        assert resolved.exists(), f"README link {target}: no such file"
        if anchor:
            assert anchor in anchors(resolved), f"README link {target}: no such heading in {path or 'README.md'}"


def test_every_docs_page_is_reached_from_the_readme_or_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted(DOCS.rglob("*.md")):
        rel = page.relative_to(DOCS).as_posix()
        assert rel in nav, f"docs/{rel} is not in mkdocs.yml's nav"


MACHINE_PATHS = re.compile(r"(/work/|/home/|/Users/|/root/|[A-Z]:\\\\)")


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_machine_specific_path(page: Path):
    hits = [line for line in page.read_text().splitlines() if MACHINE_PATHS.search(line)]
    assert not hits, f"{page.relative_to(ROOT)}: machine-specific path in {hits[0]!r}"


REPO_PATH = re.compile(r"`((?:cast_model|pipelines|workflows|tests|benchmarks|infra|configs)/[^`\s]*)`")


def _expand(path: str) -> list[str]:
    """`a/{b,c}.py` -> a/b.py, a/c.py; a path with a placeholder (<x>, *, …) is checked up to it."""
    m = re.search(r"\{([^}]*)\}", path)
    if m:
        return [p for alt in m.group(1).split(",") for p in _expand(path[:m.start()] + alt + path[m.end():])]
    cut = re.search(r"[<*…]|\.\.\.|NNN", path)
    return [path[:cut.start()].rsplit("/", 1)[0] if cut else path]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_repository_path_named_exists(page: Path):
    text = page.read_text()
    named = {p.split(":")[0] for p in REPO_PATH.findall(text)}
    missing = sorted(p for n in named for p in _expand(n) if not (ROOT / p).exists())
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_every_make_target_named_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    for page in pages():
        text = page.read_text()
        named = set(re.findall(r"`make ([a-z][\w-]*)", text))
        for block in blocks(text, "bash"):
            named |= set(re.findall(r"^\s*make ([a-z][\w-]*)", block, re.M))
        assert named <= targets, f"{page.relative_to(ROOT)} names make targets that do not exist: {named - targets}"


DOTTED = re.compile(r"`((?:cast_model|pipelines|workflows)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _resolves(dotted: str) -> bool:
    """``a.b.c`` is a module, or an attribute chain of the longest module prefix."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_module_named_exists(page: Path):
    named = sorted(set(DOTTED.findall(page.read_text())))
    missing = [n for n in named if not _resolves(n)]
    assert not missing, f"{page.relative_to(ROOT)} names modules or objects that do not exist: {missing}"
