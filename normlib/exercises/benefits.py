"""Auto-checks for the exercises of the chapter "Benefits" (book/05_benefits.ipynb).

Every expected answer comes from a reference function here, never typed in; a wrong answer that
matches a known mistake gets that mistake's hint.
"""

from __future__ import annotations

import numpy as np
import torch

from ._check import Case, Result, run_cases

__all__ = [
    "bn_scale_check",
    "check_bn_scale",
    "check_dropout_variance_ratio",
    "check_grad_norms",
    "check_steps_to_target",
    "dropout_variance_ratio",
    "grad_norms_per_layer",
    "steps_to_target",
]


def diagnose(fn, cases, *, what, mistakes=(), rtol=1e-5, atol=1e-8) -> Result:
    """:func:`run_cases` with known ``mistakes``, for cases whose arguments get mutated: those
    provide a ``make`` callable in ``kwargs["__make__"]`` that builds fresh arguments per call."""
    return run_cases(
        _unpack(fn),
        cases,
        what=what,
        rtol=rtol,
        atol=atol,
        mistakes=[(_unpack(wrong), hint) for wrong, hint in mistakes],
    )


def _unpack(fn):
    """Call ``fn`` on freshly built arguments when a case carries a ``__make__`` factory."""

    def call(*args, **kwargs):
        make = kwargs.pop("__make__", None)
        if make is not None:
            args = make()
        return fn(*args, **kwargs)

    return call


# -------------------------------------------------------------------------------------------------
# Exercise: per-layer gradient norms


def grad_norms_per_layer(model, X, y) -> list[float]:
    """``||dL/dW_l||_F`` for every ``nn.Linear`` of ``model`` in order, ``L`` the mean cross-entropy
    of ``model(X)`` against ``y`` in training mode (BatchNorm uses the batch statistics)."""
    model.train()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    return [m.weight.grad.norm().item() for m in model.modules() if isinstance(m, torch.nn.Linear)]


def _norms_no_zero_grad(model, X, y):
    model.train()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    return [m.weight.grad.norm().item() for m in model.modules() if isinstance(m, torch.nn.Linear)]


def _norms_of_weights(model, X, y):
    return [m.weight.norm().item() for m in model.modules() if isinstance(m, torch.nn.Linear)]


def _norms_eval_mode(model, X, y):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(X), y).backward()
    return [m.weight.grad.norm().item() for m in model.modules() if isinstance(m, torch.nn.Linear)]


def _norms_reversed(model, X, y):
    return grad_norms_per_layer(model, X, y)[::-1]


def _model(seed: int, bn: bool, eval_mode: bool = False, twice: bool = False):
    """A small MLP with fixed weights (built without touching the caller's random state)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers, fan_in = [], 12
        for width in (16, 8):
            layers += [torch.nn.Linear(fan_in, width)]
            layers += [torch.nn.BatchNorm1d(width)] if bn else []
            layers += [torch.nn.Tanh()]
            fan_in = width
        model = torch.nn.Sequential(*layers, torch.nn.Linear(fan_in, 3))
        X, y = torch.randn(20, 12) * 2 + 0.5, torch.randint(0, 3, (20,))
        if bn:  # non-trivial running statistics, so eval mode differs from training mode
            model.train()
            with torch.no_grad():
                model(X * 3 + 1)
        if eval_mode:
            model.eval()
        if twice:  # gradients already there from an earlier backward pass
            torch.nn.functional.cross_entropy(model(X), y).backward()
    return model, X, y


def check_grad_norms(fn) -> Result:
    """Check ``fn(model, X, y) -> list of floats`` (see :func:`grad_norms_per_layer`)."""
    specs = [
        (
            "3 Linear layers, no BatchNorm",
            dict(seed=0, bn=False),
            "one norm per nn.Linear, in order.",
        ),
        ("with BatchNorm1d", dict(seed=1, bn=True), "norms of the *gradients* of the weights."),
        (
            "model handed over in eval mode",
            dict(seed=2, bn=True, eval_mode=True),
            "put the model in training mode first (model.train()).",
        ),
        (
            "gradients left over from an earlier backward",
            dict(seed=3, bn=True, twice=True),
            "clear old gradients first (model.zero_grad()).",
        ),
    ]
    cases = []
    for name, spec, hint in specs:

        def make(spec=spec):
            return _model(**spec)

        case = Case(name, (), {"__make__": make}, hint=hint)
        case.expected = grad_norms_per_layer(*make())
        cases.append(case)
    mistakes = [
        (
            _norms_no_zero_grad,
            "the gradients accumulated over two backward passes: call "
            "model.zero_grad() before loss.backward().",
        ),
        (_norms_of_weights, "these are the norms of the weights; take m.weight.grad.norm()."),
        (_norms_eval_mode, "BatchNorm was in eval mode (running statistics): call model.train()."),
        (_norms_reversed, "the layers are in reverse order: list them input to output."),
    ]
    return diagnose(fn, cases, what="grad_norms_per_layer", mistakes=mistakes, rtol=1e-4, atol=1e-7)


# -------------------------------------------------------------------------------------------------
# Exercise: BatchNorm is invariant to the scale of the weights, its gradient is not


def _bn_out(x, V, eval_mode=False):
    z = x @ V.T
    if eval_mode:
        return z / np.sqrt(1 + 1e-5)  # running mean 0, running var 1
    return torch.nn.functional.batch_norm(z, None, None, training=True, eps=1e-5)


def bn_scale_check(W, x, dy, a, *, _eval=False, _wrt_w=False) -> tuple[float, float]:
    """``(y_diff, grad_ratio)`` for ``y(V) = BN(x V^T)`` (training mode, no affine, eps 1e-5):

    y_diff     = max |y(a W) - y(W)|
    grad_ratio = ||dL/dV at V = a W||_F / ||dL/dV at V = W||_F,   L(V) = sum(y(V) * dy)
    """
    W, x, dy = (torch.as_tensor(t, dtype=torch.float64) for t in (W, x, dy))

    def grad_at(scale):
        w = W.clone().requires_grad_()
        V = scale * w if _wrt_w else (scale * W).requires_grad_()
        y = _bn_out(x, V, _eval)
        (y * dy).sum().backward()
        return y.detach(), (w.grad if _wrt_w else V.grad)

    y1, g1 = grad_at(1.0)
    ya, ga = grad_at(float(a))
    return float((ya - y1).abs().max()), float(ga.norm() / g1.norm())


def check_bn_scale(fn) -> Result:
    """Check ``fn(W, x, dy, a) -> (y_diff, grad_ratio)`` (see :func:`bn_scale_check`)."""
    gen = torch.Generator().manual_seed(5)
    cases = []
    for name, a in [("a = 3", 3.0), ("a = 0.5", 0.5), ("a = 10", 10.0)]:
        W = torch.randn(6, 5, generator=gen, dtype=torch.float64)
        x = torch.randn(16, 5, generator=gen, dtype=torch.float64) + 1.0
        dy = torch.randn(16, 6, generator=gen, dtype=torch.float64)
        case = Case(name, (W, x, dy, a), hint="y_diff should be ~0 and grad_ratio ~1/a.")
        case.expected = bn_scale_check(W, x, dy, a)
        cases.append(case)
    mistakes = [
        (
            lambda W, x, dy, a: bn_scale_check(W, x, dy, a, _wrt_w=True),
            "grad_ratio is ~1: you differentiated with respect to W (the chain rule multiplies by "
            "a); differentiate with respect to the scaled weight V = a W.",
        ),
        (
            lambda W, x, dy, a: bn_scale_check(W, x, dy, a, _eval=True),
            "y changed with the scale: that is eval mode (fixed running statistics). Normalize "
            "with the batch's own mean and variance (training mode).",
        ),
    ]
    return diagnose(fn, cases, what="bn_scale_check", mistakes=mistakes, rtol=1e-3, atol=1e-6)


# -------------------------------------------------------------------------------------------------
# Exercise: dropout's variance shift


def dropout_variance_ratio(p, mean, var) -> float:
    """``Var_test / Var_train`` of ``u = Dropout(p)(x)`` for ``x`` with the given mean and variance.

    Training (inverted dropout, keep probability ``q = 1 - p``): ``u = x m / q`` with
    ``m ~ Bernoulli(q)``, so ``E[u] = mean`` and ``Var_train = (var + mean^2) / q - mean^2``.
    Test: ``u = x``, variance ``var``.
    """
    q = 1.0 - p
    return float(var / ((var + mean**2) / q - mean**2))


def _ratio_no_mean(p, mean, var):
    return float(1.0 - p)


def _ratio_inverted(p, mean, var):
    return 1.0 / dropout_variance_ratio(p, mean, var)


def _ratio_of_stds(p, mean, var):
    return dropout_variance_ratio(p, mean, var) ** 0.5


def check_dropout_variance_ratio(fn) -> Result:
    """Check ``fn(p, mean, var) -> float`` (see :func:`dropout_variance_ratio`)."""
    cases = [
        Case("p = 0.5, zero mean", (0.5, 0.0, 1.0), hint="with mean 0, Var_train = var / (1 - p)."),
        Case(
            "p = 0.1, mean 2, var 1",
            (0.1, 2.0, 1.0),
            hint="with mean != 0, E[u^2] = (var + mean^2) / (1 - p).",
        ),
        Case(
            "p = 0.3, mean -1, var 4",
            (0.3, -1.0, 4.0),
            hint="ratio = test variance / train variance.",
        ),
        Case("p = 0 (no dropout)", (0.0, 1.5, 2.0), hint="without dropout the ratio is 1."),
    ]
    for case in cases:
        case.expected = dropout_variance_ratio(*case.args)
    mistakes = [
        (
            _ratio_no_mean,
            "you left out the mean: E[u^2] = E[x^2] / (1 - p) = (var + mean^2) / (1 - p).",
        ),
        (_ratio_inverted, "that is train / test; the question asks for test / train."),
        (
            _ratio_of_stds,
            "that is a ratio of standard deviations; the question asks for variances.",
        ),
    ]
    return diagnose(fn, cases, what="dropout_variance_ratio", mistakes=mistakes, rtol=1e-6)


# -------------------------------------------------------------------------------------------------
# Exercise: steps to reach a target accuracy


def steps_to_target(test_acc, steps_per_epoch, target):
    """Training steps at the end of the first epoch whose test accuracy is ``>= target``
    (``test_acc[i]`` is measured after epoch ``i + 1``), or None if no epoch reaches it."""
    for i, acc in enumerate(test_acc):
        if acc >= target:
            return (i + 1) * steps_per_epoch
    return None


def _steps_zero_based(test_acc, steps_per_epoch, target):
    for i, acc in enumerate(test_acc):
        if acc >= target:
            return i * steps_per_epoch
    return None


def _steps_last_crossing(test_acc, steps_per_epoch, target):
    hits = [i for i, acc in enumerate(test_acc) if acc >= target]
    return (hits[-1] + 1) * steps_per_epoch if hits else None


def _steps_never_as_total(test_acc, steps_per_epoch, target):
    got = steps_to_target(test_acc, steps_per_epoch, target)
    return len(test_acc) * steps_per_epoch if got is None else got


def check_steps_to_target(fn) -> Result:
    """Check ``fn(test_acc, steps_per_epoch, target) -> int or None``."""
    cases = [
        Case(
            "reached after epoch 3",
            ([0.5, 0.8, 0.93, 0.95], 20, 0.9),
            hint="test_acc[i] is measured after i + 1 epochs of steps_per_epoch steps.",
        ),
        Case("reached after epoch 1", ([0.96, 0.97], 50, 0.95), hint="the first epoch counts."),
        Case(
            "reached, lost, reached again",
            ([0.7, 0.91, 0.85, 0.95], 10, 0.9),
            hint="the FIRST epoch at or above the target.",
        ),
        Case(
            "never reached", ([0.3, 0.5, 0.6], 20, 0.9), hint="return None if no epoch reaches it."
        ),
        Case("exactly at the target", ([0.8, 0.9], 7, 0.9), hint="'reaches' means >= target."),
    ]
    for case in cases:
        case.expected = steps_to_target(*case.args)
    mistakes = [
        (
            _steps_zero_based,
            "off by one epoch: the accuracy test_acc[i] comes after (i + 1) * "
            "steps_per_epoch steps.",
        ),
        (_steps_last_crossing, "that is the last epoch above the target; take the first."),
        (
            _steps_never_as_total,
            "a run that never reaches the target has no step count: return None.",
        ),
    ]
    return diagnose(fn, cases, what="steps_to_target", mistakes=mistakes)
