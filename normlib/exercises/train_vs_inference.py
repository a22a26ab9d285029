"""Checks for the exercises of chapter 3, "Training vs inference".

- :func:`check_running_stats`: the running mean/variance after a stream of batches (PyTorch's rule).
- :func:`check_steps_to_forget`: updates until the initial running value weighs at most a fraction.
- :func:`check_recalibrate`: re-estimate every BatchNorm's statistics with a pass over data.
- :func:`check_stats_unchanged`: which snippets leave ``running_mean`` as it was.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..ref import update_running_stats
from ._check import Case, Result, compare, run_cases


def _stream(seed, n_batches, batch_size, channels, loc=1.0, scale=2.0):
    rng = np.random.default_rng(seed)
    return [rng.normal(loc, scale, size=(batch_size, channels)) for _ in range(n_batches)]


def _running_stats(batches, momentum, *, keras_sense=False, biased=False):
    """Running stats from (0, 1) after ``batches`` (each (n, C)), PyTorch's rule; the keyword
    arguments reproduce the two classic mistakes, so that a check can name them."""
    mean, var = np.zeros(batches[0].shape[1]), np.ones(batches[0].shape[1])
    for t, x in enumerate(batches, start=1):
        n = x.shape[0]
        factor = 1.0 - momentum if keras_sense and momentum is not None else momentum
        # update_running_stats stores var * n / (n - 1); feeding it var * (n - 1) / n stores var
        v = x.var(axis=0) * ((n - 1) / n if biased else 1.0)
        mean, var = update_running_stats(mean, var, x.mean(axis=0), v, n, factor, t)
    return mean, var


_MISTAKES = {
    "keras_sense": "you weighted the OLD value by `momentum` (the Keras/Flax sense). PyTorch "
    "weighs the NEW batch: running = (1 - momentum) * running + momentum * batch.",
    "biased": "running_var stores the UNBIASED batch variance, var * n / (n - 1); only the "
    "normalization itself uses the biased one.",
}


def check_running_stats(fn) -> Result:
    """``fn(batches, momentum) -> (running_mean, running_var)``: start from mean 0 and variance 1,
    update once per batch (each ``(n, C)``) with PyTorch's rule; ``momentum=None`` is the
    cumulative average."""
    what = "running statistics"
    cases = [
        Case("momentum=0.1, 3 batches of 8", (_stream(0, 3, 8, 4), 0.1)),
        Case("momentum=0.5, 5 batches of 16", (_stream(1, 5, 16, 3), 0.5)),
        Case("batches of 2 (where unbiased matters most)", (_stream(2, 4, 2, 3), 0.1)),
        Case("momentum=None (cumulative average)", (_stream(3, 6, 4, 2, loc=-3.0), None)),
    ]
    last = {}

    def recording(*args):
        last["got"] = fn(*args)
        return last["got"]

    for case in cases:
        batches, momentum = case.args
        case.expected = _running_stats(batches, momentum)
        case.hint = (
            "with momentum=None the factor is 1 / t at the t-th batch (t = 1, 2, ...)."
            if momentum is None
            else "start from running_mean = 0, running_var = 1 and update once per batch."
        )
        result = run_cases(recording, [case], what=what, rtol=1e-7, atol=1e-9)
        if not result:
            for mistake in ("keras_sense", "biased") if "got" in last else ():
                wrong = _running_stats(batches, momentum, **{mistake: True})
                if compare(last["got"], wrong, rtol=1e-7, atol=1e-9) is None:
                    return Result(False, f"❌ {what}, case '{case.name}': {_MISTAKES[mistake]}")
            return result
        last.clear()
    return Result(True, f"✅ {what}: all {len(cases)} cases pass.")


def _steps(momentum, fraction) -> int:
    """Smallest t with (1 - momentum) ** t <= fraction (the 1e-9 absorbs rounding of the logs)."""
    if momentum >= 1.0:
        return 1
    return math.ceil(math.log(fraction) / math.log(1.0 - momentum) - 1e-9)


def check_steps_to_forget(fn) -> Result:
    """``fn(momentum, fraction) -> int``: the fewest updates ``t`` after which the initial running
    value's weight, ``(1 - momentum) ** t`` in PyTorch's convention, is at most ``fraction``."""
    cases = []
    for momentum, fraction in [(0.1, 0.01), (0.01, 0.01), (0.5, 0.01), (0.1, 0.5), (1.0, 0.5)]:
        hint = (
            "after t updates the initial value keeps the weight (1 - momentum) ** t: find the "
            "smallest integer t with (1 - momentum) ** t <= fraction (a ceil of a ratio of logs)."
        )
        if momentum < 1.0:
            hint += (
                f" If you got {_steps(1.0 - momentum, fraction)}, you used momentum as the weight "
                "of the old value (the Keras sense)."
            )
        name = f"momentum={momentum}, fraction={fraction}"
        cases.append(
            Case(name, (momentum, fraction), expected=_steps(momentum, fraction), hint=hint)
        )
    return run_cases(_as_int(fn), cases, what="steps to forget the initial value")


def _as_int(fn):
    """Accept any integral number (a numpy integer, 44.0) as the reader's answer."""

    def wrapped(*args):
        got = fn(*args)
        if isinstance(got, (int, float, np.integer, np.floating)) and float(got).is_integer():
            return int(got)
        return got

    return wrapped


def _stale_model(seed):
    """A small MLP with two normlib BatchNorms whose running statistics are stale (set by hand)."""
    import torch
    from torch import nn

    from .. import nn as nlnn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(5, 6, bias=False),
        nlnn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Linear(6, 4, bias=False),
        nlnn.BatchNorm1d(4, momentum=0.3),
        nn.Linear(4, 2),
    ).double()
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-5, 5)
            bn.running_var.uniform_(5, 10)
            bn.num_batches_tracked.fill_(1000)
    return model.eval()


def _recalibrated(model, batches):
    """The reference: a fresh cumulative average over ``batches`` in training mode, no gradients."""
    import torch

    model = copy.deepcopy(model)
    for bn in (model[1], model[4]):
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    return model


def check_recalibrate(fn) -> Result:
    """``fn(model, batches)``: re-estimate the running statistics of every BatchNorm of ``model``
    (in place) from ``batches``; the model must end in eval mode, its parameters and each
    BatchNorm's ``momentum`` as they were."""
    import torch

    what = "recalibrate"
    for seed, n_batches in [(0, 3), (1, 5)]:
        name = f"{n_batches} batches, seed {seed}"

        def fail(msg, name=name):
            return Result(False, f"❌ {what}, case '{name}': {msg}")

        model = _stale_model(seed)
        gen = torch.Generator().manual_seed(seed)
        batches = [torch.randn(8, 5, generator=gen, dtype=torch.float64) * 3 + 1]
        batches += [torch.randn(8, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
        batches = batches[:n_batches]
        params = {k: p.detach().clone() for k, p in model.named_parameters()}
        stale = [model[i].running_mean.clone() for i in (1, 4)]
        momenta = [model[1].momentum, model[4].momentum]
        expected = _recalibrated(model, batches)
        try:
            out = fn(model, [x.clone() for x in batches])
        except NotImplementedError:
            return Result(
                False,
                f"❌ {what}: not implemented yet (the function raises NotImplementedError). "
                "Replace the `raise` with your code.",
            )
        except Exception as exc:  # the reader's bug: report it, don't raise it
            return fail(f"your function raised {type(exc).__name__}: {exc}.")
        model = out if isinstance(out, torch.nn.Module) else model
        for i, old in zip((1, 4), stale):
            got, exp = model[i], expected[i]
            if torch.equal(got.running_mean, old):
                return fail(
                    f"model[{i}].running_mean did not change. Hint: did your function find the "
                    "BatchNorms? normlib.nn's are not subclasses of torch's _BatchNorm (so "
                    "torch.optim.swa_utils.update_bn skips them): look for modules whose "
                    "running_mean is not None."
                )
            for buf in ("running_mean", "running_var"):
                why = compare(getattr(got, buf), getattr(exp, buf), rtol=1e-9, atol=1e-12)
                if why:
                    return fail(f"model[{i}].{buf}: {why}. Hint: {_stats_hint(got, n_batches)}")
        if model.training:
            return fail("the model is still in training mode. Hint: end with model.eval().")
        for k, p in model.named_parameters():
            if not torch.equal(p.detach(), params[k]):
                return fail(
                    f"parameter {k} changed. Hint: recalibration only runs forward passes (under "
                    "torch.no_grad()), no optimizer step."
                )
        got_momenta = [model[1].momentum, model[4].momentum]
        if got_momenta != momenta:
            return fail(
                f"the BatchNorms' momentum is {got_momenta}, expected {momenta} as before. "
                "Hint: remember each module's momentum and put it back at the end."
            )
    return Result(True, f"✅ {what}: both cases pass.")


def _stats_hint(bn, n_batches) -> str:
    count = int(bn.num_batches_tracked)
    if count != n_batches:
        return (
            f"num_batches_tracked is {count}, expected {n_batches}: call reset_running_stats() "
            "first, so that the cumulative average (momentum=None) starts from zero batches."
        )
    return (
        "set momentum=None (every batch weighs the same) and run the batches with the model in "
        "training mode (model.train()), where BatchNorm updates its statistics."
    )


# Exercise 4 of chapter 3: the snippets that leave running_mean as it was.
_UNCHANGED = "adf"
_WHY = {
    "a": "(a) in eval mode BatchNorm reads the running statistics and never writes them.",
    "b": "(b) no_grad only switches off gradient tracking; the module is in training mode, so it "
    "still updates its statistics.",
    "c": "(c) inference_mode is no_grad and more, but still says nothing about the module's mode: "
    "training-mode BatchNorm updates its statistics under it.",
    "d": "(d) momentum=0 gives running = 1 * running + 0 * batch (num_batches_tracked still "
    "counts the batch; running_mean stays).",
    "e": "(e) detaching the input changes what gradients flow, not the module's mode: in training "
    "mode the statistics are updated.",
    "f": "(f) in eval mode the momentum is never used: the running statistics are only read.",
}


def check_stats_unchanged(answer) -> Result:
    """``answer``: the letters of the snippets that leave ``running_mean`` unchanged, e.g. "ab"."""
    if not isinstance(answer, str):
        return Result(False, f"❌ expected a string of letters such as 'ab', got {answer!r}.")
    got = set(answer.lower()) - set(" ,")
    if got - set(_WHY):
        return Result(
            False, f"❌ there is no snippet {sorted(got - set(_WHY))}: choose from a to f."
        )
    if got == set(_UNCHANGED):
        return Result(True, "✅ correct: (a), (d) and (f) leave running_mean alone.")
    missed_or_extra = sorted(got ^ set(_UNCHANGED))
    return Result(False, "❌ not quite. Hint: " + _WHY[missed_or_extra[0]])
