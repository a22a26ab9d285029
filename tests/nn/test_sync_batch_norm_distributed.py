"""SyncBatchNorm across processes (gloo on 127.0.0.1) equals BatchNorm on the global batch.

Spawning processes is the slow part, so ONE job of three ranks runs every multi-process scenario
and reports numbers back (:func:`_scenarios`); the tests assert on them, on every rank's report.
Single-process behaviour (fallbacks, errors, the merge formulas) runs in this process.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from normlib.distributed_demo import count_collectives, free_port, init_loopback_group, run_on_ranks
from normlib.nn import SyncBatchNorm
from normlib.nn._distributed import chan_merge, local_stats, merge_stats, sync_batch_norm_train

WORLD = 3
# per-rank batch sizes, one list per training step: uneven, an empty rank, one sample per rank
STEPS = [[2, 5, 1], [3, 0, 4], [1, 1, 1]]
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


# --- what each rank runs -------------------------------------------------------------------------


def _shard(t, sizes, rank):
    start = sum(sizes[:rank])
    return t[start : start + sizes[rank]]


def _diff(a, b) -> float:
    if a is None and b is None:
        return 0.0
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def _global_batch(step, sizes, tail, dtype):
    """The same global batch on every rank: per-channel means 3, 4, 5... and std 2."""
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(sum(sizes), *tail, generator=gen, dtype=torch.float64)
    offset = torch.arange(tail[0], dtype=torch.float64).view(1, -1, *[1] * (len(tail) - 1))
    x = 3.0 + offset + 2.0 * x
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return x.to(dtype), dy.to(dtype)


def _train_like_global(rank, sync, ref, steps, tail, dtype, group=None) -> dict:
    """Train ``sync`` on this rank's shards and ``ref`` (BatchNorm) on the global batches; the
    largest difference of every quantity over the steps."""
    diffs = dict.fromkeys(
        ["output", "input grad", "weight grad", "bias grad", "running_mean", "running_var"], 0.0
    )
    tracked_equal = True
    for step, sizes in enumerate(steps):
        x, dy = _global_batch(step, sizes, tail, dtype)
        x_global = x.clone().requires_grad_(True)
        y_global = ref(x_global)
        (y_global * dy).sum().backward()
        x_local = _shard(x, sizes, rank).clone().requires_grad_(True)
        y_local = sync(x_local)
        (y_local * _shard(dy, sizes, rank)).sum().backward()
        pairs = [
            ("output", y_local, _shard(y_global, sizes, rank)),
            ("input grad", x_local.grad, _shard(x_global.grad, sizes, rank)),
        ]
        if sync.affine:
            # parameter gradients are local sums; summed over ranks they are the global batch's
            for name in ("weight", "bias"):
                grad = getattr(sync, name).grad.clone()
                dist.all_reduce(grad, group=group)
                pairs.append((f"{name} grad", grad, getattr(ref, name).grad))
        if sync.track_running_stats:
            pairs += [
                ("running_mean", sync.running_mean, ref.running_mean),
                ("running_var", sync.running_var, ref.running_var),
            ]
            tracked_equal &= int(sync.num_batches_tracked) == int(ref.num_batches_tracked)
        for key, a, b in pairs:
            diffs[key] = max(diffs[key], _diff(a, b))
        sync.zero_grad()
        ref.zero_grad()
    diffs["num_batches_tracked equal"] = tracked_equal
    return diffs


def _error_of(fn) -> str:
    try:
        fn()
    except Exception as exc:  # the message is what the test checks
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _ddp_like_global(rank, world_size) -> dict:
    """DDP + convert_sync_batchnorm on uneven shards vs one process on the global batch, 2 steps."""
    torch.manual_seed(0)
    ref = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3)
    ).double()
    model = SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ref))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for step, sizes in enumerate(STEPS[:2]):
        gen = torch.Generator().manual_seed(step)
        x = torch.randn(sum(sizes), 1, 5, 5, generator=gen, dtype=torch.float64)
        target = torch.randint(0, 3, (sum(sizes),), generator=gen)
        opt_ref.zero_grad()
        nn.functional.cross_entropy(ref(x), target).backward()
        opt_ref.step()
        opt.zero_grad()
        # DDP averages gradients over W ranks: scale the local SUM so the average is the global mean
        local = nn.functional.cross_entropy(
            ddp(_shard(x, sizes, rank)), _shard(target, sizes, rank), reduction="sum"
        )
        (local * world_size / sum(sizes)).backward()
        opt.step()
    params = max(_diff(a, b) for a, b in zip(model.parameters(), ref.parameters()))
    buffers = max(_diff(a, b) for a, b in zip(model.buffers(), ref.buffers()))
    return {"parameters": params, "buffers": buffers, "converted": type(model[1]).__name__}


def _scenarios(rank: int, world_size: int) -> dict:
    torch.manual_seed(0)
    out = {}
    f64 = {"dtype": torch.float64}
    out["2d fp64"] = _train_like_global(
        rank, SyncBatchNorm(4, **f64), nn.BatchNorm2d(4, **f64), STEPS, (4, 5, 5), torch.float64
    )
    out["2d fp32"] = _train_like_global(
        rank, SyncBatchNorm(4), nn.BatchNorm2d(4), STEPS, (4, 3, 3), torch.float32
    )
    out["1d (N, C) momentum=None"] = _train_like_global(
        rank,
        SyncBatchNorm(3, momentum=None, **f64),
        nn.BatchNorm1d(3, momentum=None, **f64),
        STEPS + STEPS,
        (3,),
        torch.float64,
    )
    out["3d (N, C, L)"] = _train_like_global(
        rank, SyncBatchNorm(3, **f64), nn.BatchNorm1d(3, **f64), STEPS, (3, 7), torch.float64
    )
    out["no affine, no running stats"] = _train_like_global(
        rank,
        SyncBatchNorm(3, affine=False, track_running_stats=False, **f64),
        nn.BatchNorm1d(3, affine=False, track_running_stats=False, **f64),
        STEPS,
        (3, 4),
        torch.float64,
    )

    # eval: running statistics, no communication, any local batch size
    sync, ref = SyncBatchNorm(4, **f64), nn.BatchNorm2d(4, **f64)
    _train_like_global(rank, sync, ref, STEPS, (4, 2, 2), torch.float64)
    sync.eval()
    ref.eval()
    x = torch.randn(rank + 1, 4, 2, 2, dtype=torch.float64)
    with count_collectives() as log:
        y = sync(x)
    out["eval"] = {"output": _diff(y, ref(x)), "collectives": [c["op"] for c in log]}

    # collectives of one training step: one all_gather forward, one all_reduce backward
    sync = SyncBatchNorm(4).train()
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    with count_collectives() as log:
        sync(x).sum().backward()
    with count_collectives() as log_no_input_grad:
        sync(x.detach()).sum().backward()
    out["collectives"] = {
        "train step": [(c["op"], c["sent"]) for c in log],
        "no input grad": [c["op"] for c in log_no_input_grad],
    }

    # a process group of ranks 0 and 1; rank 2 is alone in its own (world size 1: plain BatchNorm)
    pair, alone = dist.new_group([0, 1]), dist.new_group([2])  # every rank creates every group
    group = pair if rank < 2 else alone
    sizes = [2, 3] if rank < 2 else [3]
    sync = SyncBatchNorm(4, process_group=group, **f64)
    ref = nn.BatchNorm2d(4, **f64)
    out["process_group"] = _train_like_global(
        rank if rank < 2 else 0, sync, ref, [sizes], (4, 3, 3), torch.float64, group
    )

    # bad use: every rank gets the same clear error, and the group still works afterwards
    out["errors"] = {
        "global count 1": _error_of(
            lambda: SyncBatchNorm(3)(torch.randn(1 if rank == 0 else 0, 3))
        ),
        "1D input": _error_of(lambda: SyncBatchNorm(3)(torch.randn(3))),
        "global count 2 (1 + 1 + 0)": _error_of(
            lambda: SyncBatchNorm(3)(torch.randn(1 if rank < 2 else 0, 3))
        ),
    }

    # the function itself: half inputs, a large offset, the returned statistics
    sizes = [3, 1, 2]
    gen = torch.Generator().manual_seed(7)
    x32 = 1e4 + torch.randn(sum(sizes), 2, 4, 4, generator=gen)
    mean64 = x32.double().mean((0, 2, 3))  # the exact statistics of the fp32 numbers
    var64 = x32.double().var((0, 2, 3), unbiased=False)
    _, mean, var, count = sync_batch_norm_train(_shard(x32, sizes, rank), None, None)
    out["fp32 offset 1e4"] = {
        "mean rel": float(((mean.double() - mean64) / mean64).abs().max()),
        "var rel": float(((var.double() - var64) / var64).abs().max()),
        "count": count,
    }
    x16 = _shard(x32 - 1e4, sizes, rank).to(torch.bfloat16)
    weight = torch.ones(2, dtype=torch.bfloat16, requires_grad=True)
    y, mean, var, count = sync_batch_norm_train(x16.requires_grad_(), weight, None)
    y.float().sum().backward()
    out["bf16"] = {
        "dtypes": [str(t.dtype) for t in (y, mean, var, x16.grad, weight.grad)],
        "var rel": float(((var.double() - var64) / var64).abs().max()),
    }

    out["ddp"] = _ddp_like_global(rank, world_size)
    return out


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports():
    return run_on_ranks(_scenarios, WORLD, timeout=150.0)


@pytest.mark.parametrize(
    "scenario, dtype",
    [
        ("2d fp64", torch.float64),
        ("2d fp32", torch.float32),
        ("1d (N, C) momentum=None", torch.float64),
        ("3d (N, C, L)", torch.float64),
        ("no affine, no running stats", torch.float64),
        ("process_group", torch.float64),
    ],
)
def test_equals_batch_norm_on_the_global_batch(reports, scenario, dtype):
    """Outputs, input gradients, summed parameter gradients and running statistics, every rank,
    over steps with uneven shards, an empty rank and one sample per rank."""
    for rank, report in enumerate(reports):
        diffs = report[scenario]
        assert diffs.pop("num_batches_tracked equal"), (rank, scenario)
        assert max(diffs.values()) < TOL[dtype], (rank, scenario, diffs)


def test_eval_uses_running_stats_without_communicating(reports):
    for report in reports:
        assert report["eval"]["output"] < 1e-12
        assert report["eval"]["collectives"] == []


def test_one_all_gather_forward_one_all_reduce_backward(reports):
    for report in reports:
        steps = report["collectives"]
        channels = 4
        # forward: [count, mean (C), M2 (C)] in float64; backward: [sum dy, sum dy*x_hat] in fp32
        assert steps["train step"] == [
            ("all_gather", 8 * (2 * channels + 1)),
            ("all_reduce", 4 * 2 * channels),
        ]
        assert steps["no input grad"] == ["all_gather"]  # dx not needed: no all_reduce


def test_bad_use_gives_the_same_clear_error_on_every_rank(reports):
    for report in reports:
        errors = report["errors"]
        assert errors["global count 1"].startswith(
            "ValueError: Expected more than 1 value per channel when training"
        )
        assert (
            "1 value(s) per channel in the global batch of 3 processes" in errors["global count 1"]
        )
        assert errors["1D input"] == "ValueError: expected at least 2D input (got 1D input)"
        assert errors["global count 2 (1 + 1 + 0)"] == "no error"


def test_statistics_are_accurate_with_a_large_offset(reports):
    """fp32 data with mean 1e4 and std 1: E[x^2] - E[x]^2 would lose every digit of the variance."""
    for report in reports:
        got = report["fp32 offset 1e4"]
        assert got["count"] == 6 * 16
        assert got["mean rel"] < 1e-6
        assert got["var rel"] < 1e-5


def test_half_inputs_keep_their_dtype_with_fp32_statistics(reports):
    for report in reports:
        got = report["bf16"]
        assert got["dtypes"] == [
            "torch.bfloat16",
            "torch.float32",
            "torch.float32",
            "torch.bfloat16",
            "torch.bfloat16",
        ]
        assert got["var rel"] < 1e-2  # bf16 inputs carry 8 bits of mantissa


def test_ddp_with_converted_sync_batch_norm_trains_like_one_process(reports):
    for report in reports:
        assert report["ddp"]["converted"] == "SyncBatchNorm"
        assert report["ddp"]["parameters"] < 1e-10
        assert report["ddp"]["buffers"] < 1e-10


# --- one process ---------------------------------------------------------------------------------


@pytest.fixture
def single_process_group():
    init_loopback_group(0, 1, free_port(), timeout=30.0)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _same_as_batch_norm(sync):
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(3)
    for _ in range(2):
        x = torch.randn(4, 3, 2, 2)
        torch.testing.assert_close(sync(x), ref(x))
    torch.testing.assert_close(sync.running_mean, ref.running_mean)
    torch.testing.assert_close(sync.running_var, ref.running_var)


def test_without_a_process_group_it_is_batch_norm():
    assert not dist.is_initialized()
    _same_as_batch_norm(SyncBatchNorm(3))


def test_world_size_one_falls_back_without_communicating(single_process_group):
    with count_collectives() as log:
        _same_as_batch_norm(SyncBatchNorm(3))
    assert log == []


def test_function_gradcheck_in_one_process(single_process_group):
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: sync_batch_norm_train(x, w, b)[0], (x, weight, bias)
    )
    y, mean, var, count = sync_batch_norm_train(x, weight, bias)
    assert count == 12 and not mean.requires_grad and not var.requires_grad


def test_function_needs_an_initialized_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        sync_batch_norm_train(torch.randn(4, 3), None, None)


def test_convert_sync_batchnorm_shares_parameters_and_buffers():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, momentum=None), nn.ReLU())
    model.eval()
    converted = SyncBatchNorm.convert_sync_batchnorm(model, process_group="pg")
    bn, sync = model[1], converted[1]
    assert isinstance(sync, SyncBatchNorm) and sync.process_group == "pg"
    assert sync.weight is bn.weight and sync.running_var is bn.running_var
    assert sync.momentum is None and not sync.training


# --- the merge formulas --------------------------------------------------------------------------


def test_chan_merge_and_merge_stats_equal_the_concatenation():
    rng = np.random.default_rng(0)
    parts = [1e4 + rng.standard_normal((n, 3)) for n in (5, 0, 1, 12)]
    everything = np.concatenate(parts)
    stats = [
        (
            len(p),
            p.mean(0) if len(p) else np.zeros(3),
            ((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(3),
        )
        for p in parts
    ]
    n, mean, m2 = stats[0]
    for other in stats[1:]:
        n, mean, m2 = chan_merge(n, mean, m2, *other)
    assert n == len(everything)
    np.testing.assert_allclose(mean, everything.mean(0), rtol=1e-14)
    np.testing.assert_allclose(m2 / n, everything.var(0), rtol=1e-9)
    counts, means, m2s = (torch.tensor(np.array(s), dtype=torch.float64) for s in zip(*stats))
    n_all, mean_all, m2_all = merge_stats(counts, means, m2s)
    assert float(n_all) == len(everything)
    np.testing.assert_allclose(mean_all.numpy(), mean, rtol=1e-14)
    np.testing.assert_allclose(m2_all.numpy(), m2, rtol=1e-9)


def test_local_stats_of_an_empty_shard_are_zero():
    n, mean, m2 = local_stats(torch.empty(0, 3, 2, 2, dtype=torch.float16))
    assert n == 0 and mean.dtype == torch.float64
    assert mean.tolist() == [0.0] * 3 and m2.tolist() == [0.0] * 3
