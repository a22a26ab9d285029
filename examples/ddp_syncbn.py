"""DistributedDataParallel + SyncBatchNorm trains exactly like one process on the combined batch.

    torchrun --nproc-per-node=2 examples/ddp_syncbn.py     # gloo on CPU; NCCL when there are GPUs
    python examples/ddp_syncbn.py --nproc 2                # without torchrun: spawns its own ranks

Each of the W ranks trains the chapter's small CNN (``normlib.distributed_demo.small_cnn``, with its
BatchNorm2d layers converted to ``normlib.nn.SyncBatchNorm``) under DistributedDataParallel on its
slice of every global batch of scikit-learn's 8x8 digits. Rank 0 then trains the same network, from
the same initial weights, in ONE process with plain BatchNorm on the whole global batches, and
prints the largest parameter and running-statistics differences: with SyncBatchNorm the W
processes compute what one process computes, up to floating-point rounding. For contrast it also
trains DDP with unsynchronized BatchNorm (each rank normalizes its own slice), which does not match.

It trains in float64 by default, where the two agree to ~1e-15: the same computation. In float32
(``--dtype float32 --tolerance 1e-2``) they agree to rounding error after one step, and training
amplifies that to ~1e-3 after 20 steps, as it would any change of summation order.

Exit status 0 when the synchronized run matches within ``--tolerance``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import normlib.nn
from normlib.distributed_demo import digits_tensors, free_port, small_cnn, use_loopback


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="optimizer steps (default 60)")
    p.add_argument("--batch-size", type=int, default=32, help="GLOBAL batch size (default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--tolerance", type=float, default=1e-9, help="largest allowed difference")
    p.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto")
    p.add_argument("--nproc", type=int, default=0, help="spawn this many ranks (no torchrun)")
    return p.parse_args(argv)


def global_batches(x, y, batch_size: int, steps: int):
    """The same sequence of global batches on every rank: a seeded shuffle, epoch after epoch."""
    gen = torch.Generator().manual_seed(0)
    order = torch.cat(
        [torch.randperm(len(x), generator=gen) for _ in range(1 + steps * batch_size // len(x))]
    )
    for k in range(steps):
        idx = order[k * batch_size : (k + 1) * batch_size]
        yield x[idx], y[idx]


def train(model, batches, lr, rank=0, world_size=1, device="cpu"):
    """SGD with momentum; each rank takes its slice of every global batch (all of it if W = 1).
    DDP averages the W gradients of the slices' mean losses: the global mean loss's gradient."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for x, y in batches:
        shard = len(x) // world_size
        x, y = x[rank * shard : (rank + 1) * shard], y[rank * shard : (rank + 1) * shard]
        opt.zero_grad()
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        opt.step()
    return model


def max_difference(a: nn.Module, b: nn.Module):
    """Largest absolute difference of the parameters, and of the floating-point buffers."""
    params = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    stats = max(
        (p - q).abs().max().item()
        for p, q in zip(a.buffers(), b.buffers())
        if p.is_floating_point()
    )
    return params, stats


@torch.no_grad()
def accuracy(model, x, y, device):
    model.eval()
    return (model(x.to(device)).argmax(1).cpu() == y).float().mean().item()


def main(args) -> int:
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = args.backend
    if backend == "auto":
        # the same choice on every rank: NCCL only if this machine has a GPU for each local rank
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        backend = "nccl" if torch.cuda.device_count() >= local_world else "gloo"
    device = torch.device(f"cuda:{local_rank}" if backend == "nccl" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if backend == "gloo" and os.environ.get("MASTER_ADDR") in ("127.0.0.1", "localhost"):
        use_loopback()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=120))
    try:
        return run(args, rank, world_size, device)
    finally:
        dist.destroy_process_group()


def run(args, rank, world_size, device) -> int:
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by {world_size} ranks")
    dtype = getattr(torch, args.dtype)
    x_train, y_train, x_test, y_test = digits_tensors()
    x_train, x_test = x_train.to(dtype), x_test.to(dtype)
    torch.manual_seed(0)
    initial = small_cnn().to(dtype)  # torch.nn.BatchNorm2d layers; the same weights on every rank

    # W ranks: SyncBatchNorm + DDP, and, for contrast, DDP with each rank's own BatchNorm
    results = {}
    for name, convert in [("synchronized", True), ("unsynchronized", False)]:
        model = copy.deepcopy(initial)
        if convert:
            model = normlib.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        train(
            ddp,
            global_batches(x_train, y_train, args.batch_size, args.steps),
            args.lr,
            rank,
            world_size,
            device,
        )
        results[name] = model

    ok = True
    if rank == 0:
        # ONE process, plain BatchNorm, the whole global batch at every step
        single = train(
            copy.deepcopy(initial).to(device),
            global_batches(x_train, y_train, args.batch_size, args.steps),
            args.lr,
            device=device,
        )
        print(
            f"{world_size} ranks ({dist.get_backend()}), global batch {args.batch_size} "
            f"= {world_size} x {args.batch_size // world_size}, {args.steps} SGD steps on digits"
        )
        for name, model in results.items():
            params, stats = max_difference(model, single)
            print(
                f"  DDP + {name:>15} BatchNorm vs one process: max |parameter difference| "
                f"{params:.1e}, max |running-statistics difference| {stats:.1e}"
            )
        params, stats = max_difference(results["synchronized"], single)
        ok = max(params, stats) <= args.tolerance
        print(
            f"  test accuracy: one process {accuracy(single, x_test, y_test, device):.3f}, "
            f"DDP + SyncBatchNorm {accuracy(results['synchronized'], x_test, y_test, device):.3f}"
        )
        verdict = "MATCH" if ok else "MISMATCH"
        print(
            f"{verdict}: SyncBatchNorm on {world_size} ranks vs one process on the combined batch, "
            f"largest difference {max(params, stats):.1e} (tolerance {args.tolerance:.0e})"
        )
    flag = torch.tensor([int(ok)], device=device)
    dist.broadcast(flag, src=0)  # every rank exits with rank 0's verdict
    return 0 if flag.item() else 1


def _spawned(rank, world_size, args):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    status = main(args)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    args = parse_args()
    if args.nproc:
        # what torchrun would do: rendezvous on 127.0.0.1, one process per rank
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        try:
            torch.multiprocessing.spawn(_spawned, args=(args.nproc, args), nprocs=args.nproc)
        except torch.multiprocessing.ProcessExitedException as exc:
            sys.exit(exc.exit_code or 1)  # a MISMATCH (exit 1), already reported by rank 0
    else:
        sys.exit(main(args))
