"""Every relative link in the Markdown docs points at a file or heading that exists.

The README links into benchmarks/ and checkpoints/ from many places, and documents move (session
28 moved the status narrative into benchmarks/history.md); a dead link is a claim whose evidence
a reader can no longer find.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("benchmarks/**/*.md"), *ROOT.glob("checkpoints/**/*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line) for line in path.read_text().splitlines() if line.startswith("#")}


def dead_links(doc: Path) -> list[str]:
    dead = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            dead.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            dead.append(target)
    return dead


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert dead_links(doc) == []


def test_dead_link_is_caught(tmp_path):
    doc = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# Where things stand\n")
    doc.write_text("[ok](b.md#where-things-stand) [gone](c.md) [bad anchor](b.md#nowhere) [web](https://x.org/y)\n")
    assert dead_links(doc) == ["c.md", "b.md#nowhere"]
