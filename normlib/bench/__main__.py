"""``python -m normlib.bench [--device cpu|cuda] [...]``: see :mod:`normlib.bench`."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normlib.bench", description=__doc__)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shapes (smoke run)")
    parser.add_argument("--out", default=None, help="where to write results (cuda: JSON + plot)")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        from .cpu import run
    else:
        from .gpu import run
    return run(quick=args.quick, out=args.out) or 0


if __name__ == "__main__":
    sys.exit(main())
