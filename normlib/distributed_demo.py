"""Multi-process helpers for chapter 11 (SyncBatchNorm), its tests and ``examples/ddp_syncbn.py``.

- :func:`run_on_ranks`: run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes joined
  in a gloo group on 127.0.0.1, and return what each rank returned. Bounded: the group has a
  timeout, the parent waits at most ``timeout`` seconds, and every process is gone when it returns
  (or raises, with the failing rank's traceback).
- :func:`count_collectives`: record the collectives that Python code issues (SyncBatchNorm's), with
  their sizes in bytes: the chapter's "what does SyncBatchNorm communicate" table.
- :func:`small_cnn`, :func:`digits_tensors`: the chapter's model and data (scikit-learn's digits).
- :class:`PerDeviceBatchNorm2d`: what W devices WITHOUT SyncBatchNorm compute, in one process.
- :func:`train_digits`, :func:`statistics_sweep`: accuracy against the number of samples per BN
  statistic; :func:`draw_statistics_noise`: the chapter's explorer.
- :func:`chapter_job`: everything the chapter measures with real processes, in one spawned job.

Functions given to :func:`run_on_ranks` must be importable (defined in a module, not in a notebook
cell): the ``spawn`` start method pickles them by name.
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import os
import queue
import socket
import sys
import time
import traceback

import torch
import torch.distributed as dist
from torch import nn

from . import nn as nnn

__all__ = [
    "PerDeviceBatchNorm2d",
    "batch_statistics",
    "chapter_job",
    "draw_statistics_noise",
    "count_collectives",
    "digits_tensors",
    "free_port",
    "init_loopback_group",
    "run_on_ranks",
    "small_cnn",
    "statistics_sweep",
    "train_digits",
    "use_loopback",
]


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use_loopback() -> None:
    """Make gloo talk over the loopback interface: the default resolves the host name, which on
    some machines (containers, CI) points at an address the processes cannot reach."""
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo0" if sys.platform == "darwin" else "lo"


def init_loopback_group(rank: int, world_size: int, port: int, *, timeout: float = 60.0) -> None:
    """``init_process_group("gloo")`` for ``world_size`` processes of this machine (127.0.0.1 only);
    every later collective fails after ``timeout`` seconds instead of waiting forever."""
    use_loopback()
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout),
    )


def _worker(rank, world_size, port, timeout, fn, args, results):
    torch.set_num_threads(1)  # W processes share the machine's cores
    try:
        init_loopback_group(rank, world_size, port, timeout=timeout)
        try:
            out = fn(rank, world_size, *args)
            dist.barrier()  # nobody tears the group down while a peer still needs it
        finally:
            dist.destroy_process_group()
        results.put((rank, True, out))
    except BaseException:  # report everything to the parent, which raises it
        results.put((rank, False, traceback.format_exc()))


def run_on_ranks(fn, world_size: int, *args, timeout: float = 120.0) -> list:
    """Run ``fn(rank, world_size, *args)`` on ranks ``0..world_size-1`` (one process each, a gloo
    group on 127.0.0.1) and return ``[result of rank 0, result of rank 1, ...]``.

    Results travel through a pipe: return plain Python values (numbers, lists, dicts, strings).
    Raises ``RuntimeError`` with the workers' tracebacks if a rank fails, and ``TimeoutError`` after
    ``timeout`` seconds; either way every process is terminated before this returns.
    """
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, world_size, port, timeout, fn, args, results),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.start()
        got, errors = {}, {}
        while len(got) + len(errors) < world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"run_on_ranks: {world_size - len(got) - len(errors)} rank(s) did not finish "
                    f"within {timeout:.0f} s"
                )
            try:
                rank, ok, value = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and results.empty():
                    codes = ", ".join(f"exit code {p.exitcode}" for p in dead)
                    raise RuntimeError(
                        f"run_on_ranks: a worker died without a report ({codes})"
                    ) from None
                continue
            (got if ok else errors)[rank] = value
            if errors:  # the others would wait for the failed rank until their timeout
                break
        if errors:
            report = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in sorted(errors.items()))
            raise RuntimeError(f"run_on_ranks: rank(s) {sorted(errors)} failed:\n{report}")
        return [got[r] for r in range(world_size)]
    finally:
        for p in procs:
            p.join(timeout=max(0.0, min(5.0, deadline - time.monotonic())))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5.0)
        results.close()
        results.join_thread()


# --- measuring the collectives -------------------------------------------------------------------

_WRAPPED = ("all_gather", "all_reduce", "all_gather_into_tensor", "broadcast", "reduce_scatter")


def _nbytes(tensors) -> int:
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    return sum(_nbytes(t) for t in tensors)


@contextlib.contextmanager
def count_collectives():
    """Record every collective issued through ``torch.distributed``'s Python functions.

    Yields a list that fills with ``{"op", "sent", "received", "dtype"}`` dicts, bytes per rank:
    an ``all_gather`` sends its tensor and receives the others'; an ``all_reduce`` of ``b`` bytes
    is counted as ``b`` sent and ``b`` received (what a ring algorithm moves, up to a factor
    ``2 (W - 1) / W``). DistributedDataParallel's gradient buckets are reduced from C++ and do not
    show up here; only what Python calls, e.g. SyncBatchNorm's statistics, is recorded.
    """
    log: list[dict] = []
    originals = {name: getattr(dist, name) for name in _WRAPPED if hasattr(dist, name)}

    def wrap(name, original):
        def counted(*args, **kwargs):
            world = dist.get_world_size(kwargs.get("group"))
            if name == "all_gather":
                tensor = args[1] if len(args) > 1 else kwargs["tensor"]
                sent, received = _nbytes(tensor), _nbytes(tensor) * (world - 1)
            else:
                tensor = args[0] if args else kwargs["tensor"]
                sent = received = _nbytes(tensor)
            dtype = str(getattr(tensor, "dtype", "")).replace("torch.", "")
            log.append({"op": name, "sent": sent, "received": received, "dtype": dtype})
            return original(*args, **kwargs)

        return counted

    try:
        for name, original in originals.items():
            setattr(dist, name, wrap(name, original))
        yield log
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


# --- the chapter's model and data ----------------------------------------------------------------


def small_cnn(norm=nn.BatchNorm2d, widths=(16, 32, 32), num_classes: int = 10) -> nn.Sequential:
    """Three 3x3 conv -> norm -> ReLU blocks (a 2x2 max-pool after the second), global average pool,
    a linear classifier: 8x8 one-channel digits in, 10 logits out. ``norm(C)`` makes each norm."""
    c1, c2, c3 = widths
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1, bias=False),
        norm(c1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1, bias=False),
        norm(c2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, padding=1, bias=False),
        norm(c3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, num_classes),
    )


def digits_tensors(test_fraction: float = 0.25, seed: int = 0):
    """scikit-learn's 1797 8x8 digits as ``(x_train, y_train, x_test, y_test)``: ``x`` float32
    ``(N, 1, 8, 8)`` scaled to [0, 1], ``y`` int64; a fixed shuffled split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


class PerDeviceBatchNorm2d(nnn.BatchNorm2d):
    """BatchNorm2d as ``devices`` data-parallel ranks WITHOUT SyncBatchNorm compute it, in one
    process.

    Training: the batch is cut into ``devices`` equal consecutive shards (rank r gets shard r, as
    in :func:`chapter_job`), each normalized with its own statistics. Running statistics: those of
    shard 0 only, because DistributedDataParallel (``broadcast_buffers=True``, the default)
    overwrites every rank's buffers with rank 0's at each forward. Eval: plain BatchNorm.
    """

    def __init__(self, num_features: int, devices: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.devices = devices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.devices == 1:
            return super().forward(x)
        shards = x.chunk(self.devices)
        if len(shards) != self.devices or len(x) % self.devices:
            raise ValueError(f"a batch of {len(x)} does not split into {self.devices} equal shards")
        y0 = super().forward(shards[0])  # rank 0: normalizes AND updates the running statistics
        rest = [
            nnn.functional.batch_norm(s, None, None, self.weight, self.bias, True, 0.0, self.eps)
            for s in shards[1:]
        ]
        return torch.cat([y0, *rest])

    def extra_repr(self) -> str:
        return super().extra_repr() + f", devices={self.devices}"


def train_digits(norm, *, global_batch=32, epochs=4, lr=0.05, seed=0, data=None) -> dict:
    """Train :func:`small_cnn` with ``norm(C)`` layers on the digits with SGD (momentum 0.9).

    Returns ``{"test_accuracy": float (eval mode), "train_loss": [mean loss of each epoch]}``.
    ``data`` is :func:`digits_tensors`'s tuple (loaded when None).
    """
    import torch.nn.functional as F

    x, y, x_test, y_test = data if data is not None else digits_tensors()
    torch.manual_seed(seed)
    model = small_cnn(norm=norm)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        model.train()
        order, total, steps = torch.randperm(len(x), generator=gen), 0.0, 0
        for k in range(0, len(x) - global_batch + 1, global_batch):  # full batches only
            idx = order[k : k + global_batch]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / steps)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return {"test_accuracy": accuracy, "train_loss": losses}


def statistics_sweep(stat_batches, seeds, *, global_batch=32, epochs=4, lr=0.05) -> dict:
    """Accuracy when each BN statistic sees ``s`` samples of a global batch of ``global_batch``:
    ``W = global_batch / s`` devices without synchronization (``s = global_batch``: SyncBatchNorm,
    or one device). Returns ``{"stat_batch", "seeds", "test_accuracy", "final_loss"}`` (lists of
    per-seed lists), JSON-ready."""
    data = digits_tensors()
    acc, loss = [], []
    for s in stat_batches:
        devices = global_batch // s
        runs = [
            train_digits(
                lambda c, d=devices: PerDeviceBatchNorm2d(c, d),
                global_batch=global_batch,
                epochs=epochs,
                lr=lr,
                seed=seed,
                data=data,
            )
            for seed in seeds
        ]
        acc.append([r["test_accuracy"] for r in runs])
        loss.append([r["train_loss"][-1] for r in runs])
    return {
        "stat_batch": list(stat_batches),
        "seeds": list(seeds),
        "global_batch": global_batch,
        "epochs": epochs,
        "test_accuracy": acc,
        "final_loss": loss,
    }


_PIXEL_SUMS = None


def _pixel_sums():
    """Per image of the digits: the sum and the sum of squares of its 64 pixels (scaled to [0, 1]),
    float64; a batch's statistics over ``n`` images follow from ``n`` rows."""
    global _PIXEL_SUMS
    if _PIXEL_SUMS is None:
        import numpy as np
        from sklearn.datasets import load_digits

        pixels = load_digits().images.reshape(-1, 64) / 16.0  # (1797, 64): one channel's values
        _PIXEL_SUMS = np.stack([pixels.sum(1), (pixels**2).sum(1)], axis=1)  # (1797, 2)
    return _PIXEL_SUMS


def batch_statistics(n_images: int, samples: int, seed: int = 0):
    """BN's per-channel ``(mean, std)`` of ``samples`` random batches of ``n_images`` digits (the
    pixels as one channel, 64 values per image); two arrays ``(samples,)``."""
    import numpy as np

    sums = _pixel_sums()
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(samples, n_images))
    total = sums[idx].sum(1)  # (samples, 2)
    mean = total[:, 0] / (64 * n_images)
    var = (
        total[:, 1] / (64 * n_images) - mean**2
    )  # float64 sums of values in [0, 1]: no cancellation
    return mean, np.sqrt(np.maximum(var, 0.0))


def draw_statistics_noise(per_device_batch: int, devices: int, *, samples: int = 1000):
    """The explorer's figure: how much BN's batch mean and std of one channel (the digits' pixels)
    vary from batch to batch on one device alone vs synchronized over ``devices``."""
    import matplotlib.pyplot as plt
    import numpy as np

    sums = _pixel_sums()
    n_all = 64 * len(sums)
    truth_mean = sums[:, 0].sum() / n_all
    truth = (truth_mean, np.sqrt(sums[:, 1].sum() / n_all - truth_mean**2))
    stats = {
        "one device": batch_statistics(per_device_batch, samples, seed=1),
        "synchronized": batch_statistics(per_device_batch * devices, samples, seed=2),
    }
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.5))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.86, wspace=0.08)
    for k, (ax, name) in enumerate(zip(axes, ["batch mean", "batch std"])):
        both = np.concatenate([st[k] for st in stats.values()])
        bins = np.linspace(both.min(), both.max(), 40)
        for (label, st), color in zip(stats.items(), ["tab:orange", "tab:blue"]):
            density, _ = np.histogram(st[k], bins=bins, density=True)
            # one artist per histogram (ax.hist draws a patch per bin: slow for 20+ frames)
            ax.stairs(
                density,
                bins,
                fill=True,
                alpha=0.6,
                color=color,
                label=f"{label}: sd {st[k].std():.3f}",
            )
        ax.axvline(truth[k], color="black", lw=1, label="all images")
        ax.set_xlabel(name)
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("density over batches")
    fig.suptitle(
        f"{devices} device(s) x {per_device_batch} image(s): synchronized statistics see "
        f"{per_device_batch * devices} images",
        fontsize=9,
    )
    return fig


# --- what the chapter runs in real processes ------------------------------------------------------


def _max_diff(a, b) -> float:
    if a.numel() == 0:
        return 0.0
    return float((a.detach().double() - b.detach().double()).abs().max())


def _shard(x: torch.Tensor, sizes, rank: int) -> torch.Tensor:
    start = sum(sizes[:rank])
    return x[start : start + sizes[rank]]


def _sync_vs_global_batch(rank: int, steps) -> dict:
    """normlib's SyncBatchNorm2d on uneven shards vs torch's BatchNorm2d on the concatenated batch,
    one training step per entry of ``steps`` (per-rank sizes): the largest differences."""
    from .nn import SyncBatchNorm

    channels = 4
    sync = SyncBatchNorm(channels, dtype=torch.float64)
    ref = nn.BatchNorm2d(channels, dtype=torch.float64)
    keys = ["output", "input gradient", "weight gradient (summed over ranks)", "running statistics"]
    diffs = dict.fromkeys(keys, 0.0)
    for step, sizes in enumerate(steps):
        gen = torch.Generator().manual_seed(step)  # every rank draws the same global batch
        x = 3.0 + 2.0 * torch.randn(sum(sizes), channels, 5, 5, generator=gen, dtype=torch.float64)
        dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        x_global = x.clone().requires_grad_(True)
        y_global = ref(x_global)
        (y_global * dy).sum().backward()
        x_local = _shard(x, sizes, rank).clone().requires_grad_(True)
        y_local = sync(x_local)
        (y_local * _shard(dy, sizes, rank)).sum().backward()
        grad = sync.weight.grad.clone()
        dist.all_reduce(grad)  # the sum over ranks, as DDP forms it (before dividing by W)
        for key, a, b in [
            (keys[0], y_local, _shard(y_global, sizes, rank)),
            (keys[1], x_local.grad, _shard(x_global.grad, sizes, rank)),
            (keys[2], grad, ref.weight.grad),
            (keys[3], sync.running_mean, ref.running_mean),
            (keys[3], sync.running_var, ref.running_var),
        ]:
            diffs[key] = max(diffs[key], _max_diff(a, b))
        sync.zero_grad()
        ref.zero_grad()
    return diffs


def _ddp_vs_one_process(rank: int, world_size: int, synchronized: bool, steps: int = 3) -> dict:
    """DDP on W ranks vs one process: with SyncBatchNorm against BatchNorm on the global batch,
    without it against :class:`PerDeviceBatchNorm2d` (float64, random 8x8 images)."""
    import copy

    import torch.nn.functional as F

    from .nn import SyncBatchNorm

    torch.manual_seed(0)
    if synchronized:
        single = small_cnn().double()
        model = SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(single))
    else:
        single = small_cnn(norm=lambda c: PerDeviceBatchNorm2d(c, world_size)).double()
        model = small_cnn().double()
        model.load_state_dict(single.state_dict())
    ddp = nn.parallel.DistributedDataParallel(model)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (single, ddp)]
    per_rank = 4
    for step in range(steps):
        gen = torch.Generator().manual_seed(step)
        x = torch.rand(per_rank * world_size, 1, 8, 8, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 10, (len(x),), generator=gen)
        for m, opt, xs, ys in [
            (single, opts[0], x, y),
            (
                ddp,
                opts[1],
                _shard(x, [per_rank] * world_size, rank),
                _shard(y, [per_rank] * world_size, rank),
            ),
        ]:
            opt.zero_grad()
            F.cross_entropy(m(xs), ys).backward()
            opt.step()
    return {
        "parameters": max(_max_diff(a, b) for a, b in zip(model.parameters(), single.parameters())),
        "buffers": max(
            _max_diff(a, b)
            for a, b in zip(model.buffers(), single.buffers())
            if a.is_floating_point()
        ),
    }


def _collectives_of_one_step(per_device_batch: int = 2) -> dict:
    """Every collective SyncBatchNorm issues in one training step of the converted small CNN."""
    from .nn import SyncBatchNorm

    torch.manual_seed(0)
    model = SyncBatchNorm.convert_sync_batchnorm(small_cnn())
    x = torch.rand(per_device_batch, 1, 8, 8)
    y = torch.randint(0, 10, (per_device_batch,))
    with count_collectives() as forward:
        loss = nn.functional.cross_entropy(model(x), y)
    with count_collectives() as backward:
        loss.backward()
    return {
        "forward": forward,
        "backward": backward,
        "channels": [m.num_features for m in model.modules() if isinstance(m, SyncBatchNorm)],
        "gradient bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }


def _timings(rank: int, world_size: int, per_device_batch: int = 2, steps: int = 20) -> dict:
    """Median seconds per DDP training step with and without SyncBatchNorm, and of one small
    all_reduce / all_gather (the latency every synchronization point pays)."""
    import copy
    import statistics

    import torch.nn.functional as F

    from .nn import SyncBatchNorm

    torch.manual_seed(0)
    base = small_cnn()
    x = torch.rand(per_device_batch, 1, 8, 8)
    y = torch.randint(0, 10, (per_device_batch,))
    out = {}
    for name, model in [
        ("BatchNorm", copy.deepcopy(base)),
        ("SyncBatchNorm", SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(base))),
    ]:
        ddp = nn.parallel.DistributedDataParallel(model)
        times = []
        for _ in range(steps + 5):
            dist.barrier()
            start = time.perf_counter()
            ddp.zero_grad()
            F.cross_entropy(ddp(x), y).backward()
            times.append(time.perf_counter() - start)
        out[f"step with {name}"] = statistics.median(times[5:])  # the first steps warm up
    small = torch.zeros(2 * 32 + 1, dtype=torch.float64)
    for name, call in [
        ("all_reduce", lambda: dist.all_reduce(small)),
        (
            "all_gather",
            lambda: dist.all_gather([torch.empty_like(small) for _ in range(world_size)], small),
        ),
    ]:
        times = []
        for _ in range(40):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times[10:])
    return out


def chapter_job(rank: int, world_size: int) -> dict:
    """What chapter 11 measures in real processes (run it with :func:`run_on_ranks`): checks
    against one process, the collectives of one step, and timings. Rank 0's report is the
    chapter's; every rank returns its own."""
    steps = [[3, 0], [1, 4], [2, 2]] if world_size == 2 else [[2] * world_size] * 3
    return {
        "sync vs global batch": _sync_vs_global_batch(rank, steps),
        "ddp synchronized": _ddp_vs_one_process(rank, world_size, True),
        "ddp unsynchronized": _ddp_vs_one_process(rank, world_size, False),
        "collectives": _collectives_of_one_step(),
        "timings": _timings(rank, world_size),
    }
