"""The README and docs: every relative link and image points at a file in the repository
(the plots they show are bench outputs committed to git, the images copies in docs/)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/results.md", "assets/README.md"]


def relative_links(doc: Path) -> list[str]:
    """Targets of the markdown links and images in ``doc`` that are not URLs or in-page anchors."""
    targets = re.findall(r"\]\(([^)\s]+)\)", doc.read_text())
    return [t for t in targets if not t.startswith(("http://", "https://", "mailto:", "#"))]


def test_relative_links_finds_links_and_images_and_skips_urls(tmp_path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("![plot](a/b.png) see [x](c.md#part), [web](https://x.org), [here](#top)\n")
    assert relative_links(doc) == ["a/b.png", "c.md#part"]


def tracked_files() -> set[Path]:
    """The files git tracks in the repository (its index), or none outside a git checkout."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False)
    if listed.returncode != 0:
        return set()
    return {REPO / name for name in listed.stdout.decode().split("\0") if name}


@pytest.mark.parametrize("name", DOCS)
def test_every_relative_link_resolves(name: str) -> None:
    # In the working tree or in git: an experiment applied to the workspace (`dvc exp run`
    # with other train.steps) replaces committed pipeline outputs a doc may link to, and a
    # reader of the repository still sees them.
    doc = REPO / name
    links = relative_links(doc)
    tracked = tracked_files()
    missing = [t for t in links
               if not (target := (doc.parent / t.split("#")[0]).resolve()).exists() and target not in tracked]
    assert not missing, f"{name} links to missing files: {missing}"
    if name == "README.md":
        assert any(t.endswith(".png") for t in links)  # it does show images
