"""Write (or check) the first cell of every chapter notebook: it installs normlib on Colab.

The cell does nothing where normlib is already installed (a local checkout, CI), and the website
hides it (tag ``remove-cell``). The repository URL comes from ``_config.yml``, the one place it is
written.

    python tools/colab_cell.py --write book/*.ipynb   # insert or refresh the cell
    python tools/colab_cell.py --check book/*.ipynb   # exit 1 if a notebook's cell has drifted
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
TAG = "colab-install"


def repository_url(config=ROOT / "_config.yml") -> str:
    return yaml.safe_load(pathlib.Path(config).read_text())["repository"]["url"].rstrip("/")


def cell_source(url: str) -> str:
    return (
        "# On Colab (or any fresh Jupyter): install normlib from the book's repository if it is "
        "missing.\n"
        "try:\n"
        "    import normlib  # noqa: F401\n"
        "except ImportError:\n"
        f'    %pip install -q "normlib @ git+{url}"'
    )


def install_cell(url: str) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {"tags": ["remove-cell", TAG]},
        "outputs": [],
        "source": cell_source(url),
    }


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def drift(nb: dict, url: str) -> str | None:
    """None if the notebook starts with the right install cell, else what is wrong."""
    cells = nb.get("cells", [])
    if not cells or TAG not in cells[0].get("metadata", {}).get("tags", []):
        return "the first cell is not the Colab install cell"
    if _source(cells[0]) != cell_source(url):
        return "the Colab install cell differs from tools/colab_cell.py's (run `make colab-cells`)"
    if "remove-cell" not in cells[0]["metadata"]["tags"]:
        return "the Colab install cell is not tagged remove-cell"
    return None


def write(path: pathlib.Path, url: str) -> bool:
    """Insert or refresh the install cell; returns True if the file changed."""
    nb = json.loads(path.read_text())
    if drift(nb, url) is None:
        return False
    cells = nb["cells"]
    new = install_cell(url)
    if cells and TAG in cells[0].get("metadata", {}).get("tags", []):
        new["execution_count"] = cells[0].get("execution_count")
        cells[0] = new
    else:
        cells.insert(0, new)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    parser.add_argument("notebooks", nargs="+", type=pathlib.Path)
    args = parser.parse_args(argv)
    url = repository_url()
    bad = 0
    for path in args.notebooks:
        if args.write:
            if write(path, url):
                print(f"{path}: install cell written (re-run the notebook to renumber its cells)")
        elif why := drift(json.loads(path.read_text()), url):
            print(f"{path}: {why}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
