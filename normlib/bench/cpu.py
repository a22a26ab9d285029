"""``python -m normlib.bench --device cpu``: normlib's CPU backend vs torch's native kernels.

For each layer and mode the two implementations run interleaved in one process (torch, normlib,
normlib, torch, ...: alternating which goes first), so drift of a shared machine hits both alike;
the table reports medians and ``ratio = torch_time / normlib_time`` (1.0: as fast as torch; higher
is better), and the ratio of the best times, which a busy machine disturbs less. Training
times one forward + backward (input and parameter gradients); eval times one forward under
``torch.no_grad()`` with the module in ``eval()``.

Goals (the speed budget of the composite "torch" backend): ratio >= 0.6 in training, >= 0.8 in eval.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

import normlib.nn as nl

GOALS = {"train": 0.6, "eval": 0.8}

CASES = [
    ("BatchNorm2d(64)", lambda ns: ns.BatchNorm2d(64), (32, 64, 28, 28)),
    ("LayerNorm(1024)", lambda ns: ns.LayerNorm(1024), (2048, 1024)),
    ("RMSNorm(1024)", lambda ns: ns.RMSNorm(1024), (2048, 1024)),
    ("GroupNorm(8, 64)", lambda ns: ns.GroupNorm(8, 64), (16, 64, 28, 28)),
]


def _step(module, x, dy, mode):
    """One timed call: forward + backward in training, forward only in eval."""
    if mode == "train":
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x).backward(dy)
    else:
        with torch.no_grad():
            module(x)


def _time(fn, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def measure(make, shape, mode, repeats: int, inner: int = 2, warmup: int = 3) -> dict:
    """Median (and best) seconds per call of torch's and normlib's module, interleaved."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_(mode == "train")
    dy = torch.randn(shape, generator=gen)
    modules = {"torch": make(torch.nn), "normlib": make(nl)}
    for m in modules.values():
        m.train(mode == "train")
    calls = {name: (lambda m=m: _step(m, x, dy, mode)) for name, m in modules.items()}
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    order = list(calls)
    for _ in range(repeats):
        for name in order:
            times[name].append(_time(calls[name], inner))
        order.reverse()  # alternate who goes first
    best = {f"{name}_best": min(t) for name, t in times.items()}
    return {**{name: statistics.median(t) for name, t in times.items()}, **best}


def run(quick: bool = False, out: str | None = None) -> int:
    """Print the comparison table (and write it as JSON to ``out``); returns 0."""
    repeats = 5 if quick else 25
    rows = []
    print(
        f"normlib vs torch {torch.__version__} on CPU ({torch.get_num_threads()} threads), "
        f"median of {repeats} interleaved repeats; ratio = torch time / normlib time"
    )
    header = (
        f"{'layer':<18} {'shape':<18} {'mode':<6} {'torch ms':>9} {'normlib ms':>11} "
        f"{'ratio':>6} {'goal':>5}  met  {'best-of ratio':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, make, shape in CASES:
        for mode in ("train", "eval"):
            t = measure(make, shape, mode, repeats, inner=1 if quick else 2)
            ratio = t["torch"] / t["normlib"]
            best_ratio = t["torch_best"] / t["normlib_best"]  # robust to a busy machine
            met = ratio >= GOALS[mode]
            rows.append(
                {
                    "layer": name,
                    "shape": list(shape),
                    "mode": mode,
                    "torch_ms": 1e3 * t["torch"],
                    "normlib_ms": 1e3 * t["normlib"],
                    "ratio": ratio,
                    "best_of_ratio": best_ratio,
                    "goal": GOALS[mode],
                    "met": met,
                }
            )
            print(
                f"{name:<18} {str(tuple(shape)):<18} {mode:<6} {1e3 * t['torch']:>9.3f} "
                f"{1e3 * t['normlib']:>11.3f} {ratio:>6.2f} {GOALS[mode]:>5.1f}  "
                f"{'yes' if met else 'NO ':<3}  {best_ratio:>13.2f}"
            )
    print(f"goals met: {sum(r['met'] for r in rows)}/{len(rows)}")
    if out:
        with open(out, "w") as f:
            json.dump(
                {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows},
                f,
                indent=1,
            )
    return 0
