"""_toc.yml and the files in book/ agree, and the chapter map (book/figures/chapter_map.svg) is
current.

Chapters are book/NN_stem.ipynb, zero-padded so that `ls` order is reading order: the toc lists
them in that order, every chapter file is in the toc and every toc entry has a file.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
CHAPTER = re.compile(r"book/(\d\d)_[a-z0-9_]+")

pytestmark = pytest.mark.notebooks


def entries() -> list[str]:
    """Toc entries in reading order (e.g. 'book/01_problem'), the root page first."""
    return [TOC["root"]] + [c["file"] for part in TOC["parts"] for c in part["chapters"]]


def source(entry: str) -> pathlib.Path | None:
    found = [ROOT / (entry + s) for s in (".ipynb", ".md") if (ROOT / (entry + s)).is_file()]
    assert len(found) <= 1, f"{entry}: both a notebook and a markdown file"
    return found[0] if found else None


def test_every_toc_entry_has_a_file():
    missing = [e for e in entries() if source(e) is None]
    assert not missing, f"in _toc.yml but not in book/ (.ipynb or .md): {missing}"


def test_every_page_in_book_is_in_the_toc():
    pages = {p.relative_to(ROOT).with_suffix("").as_posix() for p in ROOT.glob("book/*.ipynb")}
    pages |= {p.relative_to(ROOT).with_suffix("").as_posix() for p in ROOT.glob("book/*.md")}
    orphans = sorted(pages - set(entries()))
    assert not orphans, f"in book/ but not in _toc.yml (the site would not show them): {orphans}"


def test_chapters_are_in_file_name_order_and_numbered_01_to_n():
    chapters = [e for e in entries() if CHAPTER.fullmatch(e)]
    assert chapters == sorted(chapters), "the toc's chapter order differs from `ls book/` order"
    numbers = [int(CHAPTER.fullmatch(c).group(1)) for c in chapters]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def test_root_is_the_landing_page_and_parts_are_captioned():
    assert TOC["format"] == "jb-book"
    assert TOC["root"] == "book/intro"
    assert all(part.get("caption") for part in TOC["parts"])
    assert any(part.get("numbered") for part in TOC["parts"]), "no numbered part"


def test_chapter_map_figure_is_current():
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "chapter_map.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
