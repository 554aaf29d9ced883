"""Reading the README and the docs pages as a test sees them: fenced blocks, the commands inside them,
links and headings. Plain text parsing, no markdown library: the README is read by GitHub, not mkdocs."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.M)


def pages() -> list[Path]:
    """The README and every markdown page of the docs site."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def prose(text: str) -> str:
    """The text outside fenced blocks (where links and headings are)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """The anchor GitHub and mkdocs' toc give a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(prose(path.read_text()))}


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


@dataclass(frozen=True)
class Command:
    """One command line of a shell block: where it is, the module whose ``main`` runs it, its words."""

    page: str
    line: str
    module: str
    args: tuple[str, ...]

    def flags(self) -> set[str]:
        return {a.split("=", 1)[0] for a in self.args if a.startswith("--")}


def console_scripts() -> dict[str, str]:
    """``cast-*`` name -> module, from pyproject.toml's [project.scripts]."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


PLACEHOLDER = re.compile(r"<([a-z][\w -]*)>")  # <some id>: a value the reader fills in
OPTIONAL = re.compile(r"\[(--[^\]]+)\]")  # [--log-mlflow]: a flag the reader may add


def _logical_lines(block: str) -> list[str]:
    """The block's command lines: continuations joined, comments dropped, a placeholder made one word
    (``<some id>`` -> ``SOME_ID``) and an optional flag given (``[--x]`` -> ``--x``)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    joined = PLACEHOLDER.sub(lambda m: re.sub(r"\W+", "_", m.group(1)).upper(), joined)
    joined = OPTIONAL.sub(r"\1", joined)
    return [line.split(" #", 1)[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _module_of(words: list[str], scripts: dict[str, str]) -> tuple[str, list[str]] | None:
    for i, word in enumerate(words):
        if word in scripts:
            return scripts[word], words[i + 1:]
        if word.startswith("workflows/") and word.endswith(".py") and i > 0 and words[i - 1] == "python":
            return word[:-3].replace("/", "."), words[i + 1:]
        if word == "-m" and i + 1 < len(words) and words[i + 1].startswith(("workflows.", "pipelines.")):
            return words[i + 1], words[i + 2:]
    return None


def commands(path: Path) -> list[Command]:
    """Every project command in the page's ``bash`` blocks: ``cast-*``, ``python workflows/x.py``
    (also after ``ray job submit ... --``) and ``python -m workflows.x``."""
    scripts = console_scripts()
    found = []
    for block in blocks(path.read_text(), "bash"):
        for line in _logical_lines(block):
            try:
                words = shlex.split(line.split("|")[0].split(">")[0])
            except ValueError:
                continue
            hit = _module_of(words, scripts)
            if hit:
                found.append(Command(str(path.relative_to(ROOT)), line, hit[0], tuple(hit[1])))
    return found
