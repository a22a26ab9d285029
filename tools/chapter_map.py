"""Draw the map of the book's chapters (book/figures/chapter_map.svg) from _toc.yml.

One column per part, in reading order; one box per chapter with the number the website gives it
(numbered parts count on from one another) and the chapter's title (its first heading; the file name
until the chapter exists). Plain SVG written as text: the same toc and titles give the same bytes.

    python tools/chapter_map.py            # write book/figures/chapter_map.svg
    python tools/chapter_map.py --check    # exit 1 if the committed figure is out of date
"""

from __future__ import annotations

import argparse
import html
import json
import pathlib
import re
import sys
import textwrap

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "book" / "figures" / "chapter_map.svg"

# Layout, in pixels. A column per part; boxes wrap titles at WRAP characters.
COL_W, COL_GAP, BOX_H, BOX_GAP, HEAD_H, PAD = 200, 24, 62, 16, 46, 12
WRAP, FONT = 25, 13
FILLS = ["#e8f0fe", "#e6f4ea", "#fef7e0", "#fce8e6", "#f3e8fd"]
STROKES = ["#4a78c2", "#3d8b57", "#b8860b", "#c0504d", "#7e57c2"]


def chapter_title(path: pathlib.Path) -> str | None:
    """The first '# ' heading of a chapter (markdown file or notebook), without inline markup."""
    if not path.is_file():
        return None
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells
            if c["cell_type"] == "markdown"
        )
    else:
        text = path.read_text(encoding="utf-8")
    match = re.search(r"^# +(.+?)\s*$", text, flags=re.MULTILINE)
    if not match:
        return None
    return re.sub(r"[`*_]|\{[a-z:]+\}", "", match.group(1)).strip()


def source(stem: str) -> pathlib.Path:
    """The file behind a toc entry ('book/01_problem' -> book/01_problem.ipynb or .md)."""
    for suffix in (".ipynb", ".md"):
        if (ROOT / (stem + suffix)).is_file():
            return ROOT / (stem + suffix)
    return ROOT / (stem + ".ipynb")


def fallback_title(stem: str) -> str:
    """'book/10_gpu_kernels' -> 'Gpu kernels': only until the chapter's file exists."""
    name = re.sub(r"^\d+_", "", pathlib.PurePosixPath(stem).name).replace("_", " ")
    return name[:1].upper() + name[1:]


def read_toc(toc_path: pathlib.Path = ROOT / "_toc.yml") -> list[dict]:
    """[{"caption", "chapters": [(number or None, title)]}] in reading order, numbered like the site
    (chapters of numbered parts count on from one part to the next)."""
    toc = yaml.safe_load(toc_path.read_text())
    parts, number = [], 0
    for part in toc["parts"]:
        chapters = []
        for entry in part["chapters"]:
            stem = entry["file"]
            title = chapter_title(source(stem)) or fallback_title(stem)
            if part.get("numbered"):
                number += 1
                chapters.append((number, title))
            else:
                chapters.append((None, title))
        parts.append({"caption": part["caption"], "chapters": chapters})
    return parts


def _text(x: float, y: float, s: str, **attrs) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:g}" y="{y:g}"{extra}>{html.escape(s)}</text>'


def svg(parts: list[dict]) -> str:
    """The map as an SVG document (a string)."""
    rows = max(len(p["chapters"]) for p in parts)
    width = PAD * 2 + len(parts) * COL_W + (len(parts) - 1) * COL_GAP
    height = PAD * 2 + HEAD_H + rows * BOX_H + (rows - 1) * BOX_GAP
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
        f'font-size="{FONT}" role="img" aria-label="Map of the chapters">',
        "<title>Map of the chapters: parts in reading order, left to right</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for i, part in enumerate(parts):
        x = PAD + i * (COL_W + COL_GAP)
        fill, stroke = FILLS[i % len(FILLS)], STROKES[i % len(STROKES)]
        caption = part["caption"].split(": ", 1)
        out.append(
            _text(
                x + COL_W / 2,
                PAD + 16,
                caption[0],
                text_anchor="middle",
                font_weight="bold",
                fill=stroke,
            )
        )
        if len(caption) > 1:
            out.append(
                _text(x + COL_W / 2, PAD + 34, caption[1], text_anchor="middle", fill="#333")
            )
        if i + 1 < len(parts):  # reading order: on to the next part
            y = PAD + 24
            out.append(
                f'<line x1="{x + COL_W - 2}" y1="{y}" x2="{x + COL_W + COL_GAP - 2}" y2="{y}" '
                'stroke="#666" stroke-width="1.5" marker-end="url(#arrow)"/>'
            )
        for j, (number, title) in enumerate(part["chapters"]):
            y = PAD + HEAD_H + j * (BOX_H + BOX_GAP)
            out.append(
                f'<rect x="{x}" y="{y}" width="{COL_W}" height="{BOX_H}" rx="8" fill="{fill}" '
                f'stroke="{stroke}" stroke-width="1.5"/>'
            )
            label = f"{number}. {title}" if number is not None else title
            lines = textwrap.wrap(label, WRAP)[:3]
            top = y + BOX_H / 2 - (len(lines) - 1) * (FONT + 3) / 2 + FONT * 0.35
            for k, line in enumerate(lines):
                out.append(_text(x + 10, top + k * (FONT + 3), line, fill="#222"))
            if j + 1 < len(part["chapters"]):
                ay = y + BOX_H
                out.append(
                    f'<line x1="{x + COL_W / 2}" y1="{ay}" x2="{x + COL_W / 2}" '
                    f'y2="{ay + BOX_GAP - 1}" stroke="#666" stroke-width="1.5" '
                    'marker-end="url(#arrow)"/>'
                )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the figure is out of date")
    args = parser.parse_args(argv)
    text = svg(read_toc())
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run `python tools/chapter_map.py`")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
