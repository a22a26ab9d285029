"""GPU benchmark: normlib's Triton kernels vs torch eager vs ``torch.compile``, on the same tensors.

``python -m normlib.bench --device cuda [--quick] [--out DIR]``

Every configuration is timed three ways through the user-facing functionals:
``normlib.nn.functional.<op>`` on the ``"triton"`` backend, ``torch.nn.functional.<op>`` (eager),
and the same torch call under ``torch.compile(dynamic=False)`` (compiled once per configuration,
timed after warm-up). Training configurations time the forward (inputs that require grad, running
statistics updated, as in training) and ``y.backward(dy)``; eval configurations time the forward
under ``no_grad``. Times are ``triton.testing.do_bench`` medians with L2 flushed before every run.

Bandwidth: the minimum bytes an op must move (:func:`min_bytes`: read every input once, write every
output once) over its time, compared with the device's copy bandwidth measured in the same run
(``dst.copy_(src)`` of a 1 GiB tensor). Results go to ``<out>/<device>.json`` and ``<device>.png``;
the printed summary gives per-op geomean speedups and the bandwidth goals below.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

OPS = ("batch_norm", "layer_norm", "rms_norm", "group_norm")

# Share of copy bandwidth each (op, pass) should reach for tensors >= 100 MB on an H100.
GOALS = {
    ("layer_norm", "fwd"): 90,
    ("layer_norm", "bwd"): 80,
    ("rms_norm", "fwd"): 90,
    ("rms_norm", "bwd"): 85,
    ("group_norm", "fwd"): 85,
    ("group_norm", "bwd"): 75,
    ("batch_norm", "eval"): 90,
    ("batch_norm", "fwd"): 60,
    ("batch_norm", "bwd"): 55,
}
GOAL_MIN_MB = 100  # the bandwidth goals apply from this tensor size on
LATENCY_MAX_MB = 8  # below this, launch latency dominates: reported separately
BUDGET_S = 420  # stop starting new configurations after this long (the run must stay < 10 min)


@dataclass(frozen=True)
class Config:
    """One tensor configuration: ``mode`` "train" gives the fwd and bwd rows, "eval" one row."""

    op: str  # one of OPS
    shape: tuple[int, ...]
    dtype: torch.dtype
    layout: str  # "nchw", "channels_last" or "rows" (LayerNorm/RMSNorm: (M, N) contiguous)
    mode: str = "train"  # "train" or "eval" (eval: BatchNorm only)
    groups: int = 0  # GroupNorm's num_groups

    @property
    def passes(self) -> tuple[str, ...]:
        return ("fwd", "bwd") if self.mode == "train" else ("eval",)

    @property
    def tensor_mb(self) -> float:
        return math.prod(self.shape) * _itemsize(self.dtype) / 1e6


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def min_bytes(op: str, pass_: str, shape, dtype: torch.dtype) -> int:
    """The fewest bytes ``op`` can move: each input read once, each output written once.

    ``x``-sized tensors: forward and eval read ``x`` and write ``y`` (2 of them); backward reads
    ``x`` and ``dy`` and writes ``dx`` (3). Parameters (``C`` or ``N`` of them, in ``dtype``): read
    ``weight`` (and ``bias``) forward; read ``weight``, write ``dweight`` (and ``dbias``) backward.
    BatchNorm forward also writes its batch ``mean``/``var``, eval reads the running ones (counted
    as float32). Saved statistics are an implementation choice (they could be recomputed from
    ``x``): not counted.
    """
    numel = math.prod(shape)
    e = _itemsize(dtype)
    if op in ("batch_norm", "group_norm"):
        params = shape[1]
    elif op in ("layer_norm", "rms_norm"):
        params = shape[-1]
    else:
        raise ValueError(f"unknown op {op!r}")
    n_params = 1 if op == "rms_norm" else 2  # weight (and bias)
    if pass_ == "bwd":
        total = 3 * numel * e + (1 + n_params) * params * e
    elif pass_ in ("fwd", "eval"):
        total = 2 * numel * e + n_params * params * e
        if op == "batch_norm":
            total += 2 * params * 4  # batch mean/var written (fwd) or running mean/var read (eval)
    else:
        raise ValueError(f"unknown pass {pass_!r}")
    return int(total)


def configs(quick: bool = False) -> list[Config]:
    """The configurations of a full (or ``quick``) run, interleaved across ops so a run cut short
    by the time budget still covers every op; the latency class comes last."""
    f32, bf16 = torch.float32, torch.bfloat16
    if quick:
        return [
            Config("batch_norm", (256, 512, 28, 28), bf16, "nchw"),
            Config("batch_norm", (256, 512, 28, 28), bf16, "channels_last"),
            Config("batch_norm", (256, 512, 28, 28), bf16, "channels_last", "eval"),
            Config("layer_norm", (2**27 // 4096, 4096), bf16, "rows"),
            Config("rms_norm", (2**27 // 4096, 4096), bf16, "rows"),
            Config("group_norm", (32, 320, 64, 64), bf16, "nchw", groups=32),
            Config("layer_norm", (4096, 768), bf16, "rows"),
        ]
    # ResNet-50's BatchNorm inputs at batch 256: the stem and the four stages' widest tensors
    ladder = [(256, 64, 112, 112), (256, 256, 56, 56), (256, 512, 28, 28), (256, 1024, 14, 14),
              (256, 2048, 7, 7)]  # fmt: skip
    per_op = {
        "batch_norm": [
            Config("batch_norm", shape, dtype, layout, mode)
            for shape in ladder
            for dtype in (f32, bf16)
            for layout in ("nchw", "channels_last")
            for mode in ("train", "eval")
        ],
        "layer_norm": [
            Config("layer_norm", (2**27 // n, n), dtype, "rows")
            for n in (512, 1024, 4096, 16384, 65536)
            for dtype in (f32, bf16)
        ],
        "rms_norm": [
            Config("rms_norm", (2**27 // n, n), dtype, "rows")
            for n in (512, 1024, 4096, 16384, 65536)
            for dtype in (f32, bf16)
        ],
        # UNet-like: batch 32, 32 groups, channels doubling as the resolution halves
        "group_norm": [
            Config("group_norm", shape, dtype, "nchw", groups=32)
            for shape in ((32, 128, 128, 128), (32, 320, 64, 64), (32, 640, 32, 32))
            for dtype in (f32, bf16)
        ],
    }
    out = []
    for i in range(max(len(v) for v in per_op.values())):
        out += [v[i] for v in per_op.values() if i < len(v)]
    latency = [
        Config("batch_norm", (32, 64, 28, 28), f32, "nchw"),
        Config("batch_norm", (32, 256, 14, 14), bf16, "channels_last"),
        Config("batch_norm", (32, 256, 14, 14), bf16, "channels_last", "eval"),
        Config("layer_norm", (4096, 768), bf16, "rows"),
        Config("rms_norm", (4096, 512), bf16, "rows"),
        Config("group_norm", (2, 320, 32, 32), f32, "nchw", groups=32),
    ]
    return out + latency


# ---------------------------------------------------------------------------------------------
# the three implementations of one configuration


def _make_inputs(cfg: Config, device):
    """``(x, dy, params)``: seeded tensors on ``device`` in the configuration's layout."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(cfg.shape, generator=g, device=device, dtype=cfg.dtype)
    dy = torch.randn(cfg.shape, generator=g, device=device, dtype=cfg.dtype)
    if cfg.layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
        dy = dy.to(memory_format=torch.channels_last)
    n = cfg.shape[-1] if cfg.op in ("layer_norm", "rms_norm") else cfg.shape[1]
    names = ("weight",) if cfg.op == "rms_norm" else ("weight", "bias")
    params = {k: torch.randn(n, generator=g, device=device, dtype=cfg.dtype) for k in names}
    return x, dy, params


def _call(functional, cfg: Config, params, stats):
    """``fn(x) -> y`` computing ``cfg.op`` with ``functional`` (torch's or normlib's module)."""
    op, w, b = cfg.op, params.get("weight"), params.get("bias")
    if op == "batch_norm":
        rm, rv = stats
        training = cfg.mode == "train"
        return lambda x: functional.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5)
    if op == "layer_norm":
        return lambda x: functional.layer_norm(x, (cfg.shape[-1],), w, b, 1e-5)
    if op == "rms_norm":
        return lambda x: functional.rms_norm(x, (cfg.shape[-1],), w, 1e-6)
    return lambda x: functional.group_norm(x, cfg.groups, w, b, 1e-5)


def _implementations(cfg: Config, params, device, compiler):
    """``{"normlib": fn, "eager": fn, "compile": fn}``, each with its own running statistics."""
    import torch.nn.functional as torch_functional

    import normlib.nn.functional as normlib_functional

    def stats():
        c = cfg.shape[1]
        return (
            torch.zeros(c, device=device, dtype=cfg.dtype),
            torch.ones(c, device=device, dtype=cfg.dtype),
        )  # like model.to(dtype): running statistics in the same dtype

    fns = {
        "normlib": _call(normlib_functional, cfg, params, stats()),
        "eager": _call(torch_functional, cfg, params, stats()),
    }
    fns["compile"] = compiler(_call(torch_functional, cfg, params, stats()))
    return fns


def _time_config(cfg: Config, device, timer, compiler) -> dict[str, dict[str, float]]:
    """``{pass: {impl: ms}}`` for one configuration."""
    x, dy, params = _make_inputs(cfg, device)
    training = cfg.mode == "train"
    for p in params.values():
        p.requires_grad_(training)
    fns = _implementations(cfg, params, device, compiler)
    grad_to_none = [x, *params.values()]
    times: dict[str, dict[str, float]] = {p: {} for p in cfg.passes}
    for impl, fn in fns.items():
        if training:
            xg = x.detach().requires_grad_(True)
            grad_to_none[0] = xg
            y = fn(xg)  # warm-up (compiles) and the graph the backward timing runs through
            y.backward(dy, retain_graph=True)
            times["fwd"][impl] = timer(lambda fn=fn, xg=xg: fn(xg))
            times["bwd"][impl] = timer(
                lambda y=y: y.backward(dy, retain_graph=True), grad_to_none=grad_to_none
            )
            del y
        else:
            with torch.no_grad():
                fn(x)  # warm-up (compiles)
                times["eval"][impl] = timer(lambda fn=fn: fn(x))
    return times


def do_bench_timer(fn, grad_to_none=None) -> float:
    """Median milliseconds of ``fn`` by ``triton.testing.do_bench`` (L2 flushed before each run)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10, rep=50, grad_to_none=grad_to_none, return_mode="median"))


def static_compiler(fn):
    """``torch.compile(fn, dynamic=False)`` after a dynamo reset: one static graph per config (the
    reset also keeps dynamo's per-function recompile limit from falling back to eager)."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def copy_bandwidth(device, timer, numel: int = 2**28) -> float:
    """GB/s of ``dst.copy_(src)`` (read + write) for ``numel`` float32 values (1 GiB by default)."""
    src = torch.empty(numel, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


# ---------------------------------------------------------------------------------------------
# results: rows, JSON, plot, summary


def make_row(cfg: Config, pass_: str, ms: dict[str, float], copy_gbps: float) -> dict:
    """One entry of ``results`` in the JSON file."""
    nbytes = min_bytes(cfg.op, pass_, cfg.shape, cfg.dtype)
    gbps = nbytes / (ms["normlib"] * 1e-3) / 1e9
    return {
        "op": cfg.op,
        "pass": pass_,
        "shape": list(cfg.shape),
        "dtype": str(cfg.dtype).removeprefix("torch."),
        "layout": cfg.layout,
        "normlib_ms": float(ms["normlib"]),
        "eager_ms": float(ms["eager"]),
        "compile_ms": float(ms["compile"]),
        "min_bytes": int(nbytes),
        "normlib_gbps": float(gbps),
        "pct_copy": float(100 * gbps / copy_gbps),
    }


def device_slug(name: str) -> str:
    """A file name for a device name: ``"NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def write_json(path: Path, device_name: str, copy_gbps: float, rows: list[dict]) -> dict:
    """Write (and return) the results document."""
    import triton

    doc = {
        "device": device_name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "copy_gbps": float(copy_gbps),
        "results": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _row_mb(row: dict) -> float:
    return math.prod(row["shape"]) * _itemsize(getattr(torch, row["dtype"])) / 1e6


def plot(doc: dict, path: Path) -> None:
    """Per op: share of copy bandwidth (from min_bytes) of normlib, eager and compile, per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharey=True)
    copy = doc["copy_gbps"]
    for ax, op in zip(axes.flat, OPS):
        rows = [r for r in doc["results"] if r["op"] == op]
        labels = [
            f"{r['pass']} {r['dtype'][:4]} {r['layout'][:2]} {_row_mb(r):.0f}MB" for r in rows
        ]
        for impl, marker in (("normlib", "o"), ("eager", "s"), ("compile", "^")):
            pct = [100 * r["min_bytes"] / (r[f"{impl}_ms"] * 1e-3) / 1e9 / copy for r in rows]
            ax.plot(range(len(rows)), pct, marker, label=impl, alpha=0.8)
        ax.axhline(100, color="gray", lw=0.8, ls="--")
        ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=5)
        ax.set_title(op)
        ax.set_ylabel("% of copy bandwidth")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{doc['device']}: copy {copy:.0f} GB/s, torch {doc['torch']}, triton {doc['triton']}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarize(doc: dict) -> list[str]:
    """The printed report: geomean speedups per op, bandwidth goals, the latency class."""
    rows = doc["results"]
    big = [r for r in rows if _row_mb(r) >= LATENCY_MAX_MB]
    small = [r for r in rows if _row_mb(r) < LATENCY_MAX_MB]
    lines = [f"{doc['device']}: copy bandwidth {doc['copy_gbps']:.0f} GB/s", ""]
    lines.append(f"geomean speedup of normlib (tensors >= {LATENCY_MAX_MB} MB; goal >= 1.0x both)")
    lines.append(f"{'op':<12}{'cases':>6}{'vs eager':>10}{'vs compile':>12}  goal")
    for op in OPS:
        mine = [r for r in big if r["op"] == op]
        if not mine:
            continue
        vs_eager = _geomean(r["eager_ms"] / r["normlib_ms"] for r in mine)
        vs_compile = _geomean(r["compile_ms"] / r["normlib_ms"] for r in mine)
        ok = "PASS" if vs_eager >= 1.0 and vs_compile >= 1.0 else "FAIL"
        lines.append(f"{op:<12}{len(mine):>6}{vs_eager:>9.2f}x{vs_compile:>11.2f}x  {ok}")
    lines += [
        "",
        f"share of copy bandwidth, tensors >= {GOAL_MIN_MB} MB (every case must reach it)",
    ]
    for (op, pass_), goal in GOALS.items():
        mine = [
            r for r in rows if r["op"] == op and r["pass"] == pass_ and _row_mb(r) >= GOAL_MIN_MB
        ]
        if not mine:
            continue
        worst = min(mine, key=lambda r: r["pct_copy"])
        passed = sum(r["pct_copy"] >= goal for r in mine)
        ok = "PASS" if passed == len(mine) else "FAIL"
        where = f"{tuple(worst['shape'])} {worst['dtype']} {worst['layout']}"
        lines.append(
            f"{op:<12}{pass_:<5} >= {goal:>2}%: {passed}/{len(mine)} cases, "
            f"worst {worst['pct_copy']:.0f}% at {where}  {ok}"
        )
    if small:
        lines += ["", f"latency class (tensors < {LATENCY_MAX_MB} MB): ms"]
        lines.append(
            f"{'op':<12}{'pass':<6}{'shape':<22}{'dtype':<10}{'normlib':>9}{'eager':>9}{'compile':>9}"
        )
        for r in small:
            lines.append(
                f"{r['op']:<12}{r['pass']:<6}{str(tuple(r['shape'])):<22}{r['dtype']:<10}"
                f"{r['normlib_ms']:>9.4f}{r['eager_ms']:>9.4f}{r['compile_ms']:>9.4f}"
            )
    return lines


# ---------------------------------------------------------------------------------------------
# the run


def run(quick=False, out=None, *, device="cuda", timer=None, compiler=None, config_list=None,
        budget_s=BUDGET_S):  # fmt: skip
    """Benchmark, write ``<out>/<device>.json`` and ``.png`` (``out`` defaults to
    ``benchmarks/results``; a path ending in ``.json`` names the file), print the summary.

    ``timer``, ``compiler`` and ``config_list`` default to ``do_bench``, ``torch.compile`` and
    :func:`configs`; tests pass small stand-ins to run the pipeline on a CPU.
    """
    import normlib

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("python -m normlib.bench --device cuda needs a CUDA GPU")
    timer = timer or do_bench_timer
    compiler = compiler or static_compiler
    config_list = configs(quick) if config_list is None else config_list
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    out = Path("benchmarks/results" if out is None else out)
    json_path = out if out.suffix == ".json" else out / f"{device_slug(name)}.json"

    start = time.perf_counter()
    copy_gbps = copy_bandwidth(device, timer, numel=2**28 if device.type == "cuda" else 2**16)
    print(f"{name}: copy bandwidth {copy_gbps:.0f} GB/s")
    rows = []
    with normlib.use_backend("triton"):
        for i, cfg in enumerate(config_list):
            if time.perf_counter() - start > budget_s:
                print(
                    f"time budget of {budget_s} s reached: skipped {len(config_list) - i} configs"
                )
                break
            t0 = time.perf_counter()
            times = _time_config(cfg, device, timer, compiler)
            for pass_ in cfg.passes:
                rows.append(make_row(cfg, pass_, times[pass_], copy_gbps))
                r = rows[-1]
                print(
                    f"[{i + 1}/{len(config_list)}] {cfg.op} {pass_} {cfg.shape} {r['dtype']} "
                    f"{cfg.layout}: normlib {r['normlib_ms']:.3f} ms ({r['pct_copy']:.0f}% of copy)"
                    f", eager {r['eager_ms']:.3f}, compile {r['compile_ms']:.3f}"
                    f"  [{time.perf_counter() - t0:.1f} s]"
                )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    doc = write_json(json_path, name, copy_gbps, rows)
    plot(doc, json_path.with_suffix(".png"))
    if device.type == "cuda" and not quick:
        # a copy inside the package, where book/10_gpu_kernels.ipynb finds it (also on Colab)
        from .. import data

        print(f"stored a copy as {data.save('bench_' + json_path.stem, doc)}")
    print()
    print("\n".join(summarize(doc)))
    elapsed = time.perf_counter() - start
    print(f"\nwrote {json_path} and {json_path.with_suffix('.png')} in {elapsed:.0f} s")
    return 0
