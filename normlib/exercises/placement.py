"""Checks for the exercises of chapter 4, "Where to place BatchNorm".

- :func:`check_fold_linear_bn`: fold an eval BatchNorm into the Linear layer before it (NumPy).
- :func:`check_fold_bn_into_next`: fold an eval BatchNorm into the Linear layer after it.
- :func:`check_remove_redundant_biases`: drop the biases that a following BatchNorm cancels.
- :func:`check_foldable`: which layer patterns fold into a single layer at inference.
"""

from __future__ import annotations

import numpy as np

from ._check import Case, Result, compare, run_cases


def _bn_params(rng, c, *, eps=1e-5):
    return (
        rng.normal(size=c),  # running_mean
        rng.uniform(0.05, 4.0, size=c),  # running_var
        rng.normal(size=c),  # gamma (negative entries too)
        rng.normal(size=c),  # beta
        eps,
    )


def _fold_cases(shapes):
    cases = []
    for i, (name, out_f, in_f, eps) in enumerate(shapes):
        rng = np.random.default_rng(i)
        w, b = rng.normal(size=(out_f, in_f)), rng.normal(size=out_f)
        cases.append((name, w, b, rng, eps))
    return cases


def _scale(running_var, gamma, eps):
    return gamma / np.sqrt(running_var + eps)


def check_fold_linear_bn(fn) -> Result:
    """``fn(W, b, running_mean, running_var, gamma, beta, eps) -> (W_fold, b_fold)`` (NumPy) with
    ``W_fold @ x + b_fold == bn(W @ x + b)`` for an eval-mode BatchNorm over the out features."""
    cases = []
    for name, w, b, rng, eps in _fold_cases(
        [("square 5 -> 5", 5, 5, 1e-5), ("4 -> 3 features", 3, 4, 1e-5), ("large eps", 6, 2, 0.5)]
    ):
        mean, var, gamma, beta, eps = _bn_params(rng, w.shape[0], eps=eps)
        s = _scale(var, gamma, eps)
        case = Case(
            name,
            (w, b, mean, var, gamma, beta, eps),
            expected=(w * s[:, None], (b - mean) * s + beta),
            hint="write bn(W x + b) as one affine map of x and read off its matrix and vector.",
        )
        mistakes = {
            "eps goes inside the square root: scale = gamma / sqrt(running_var + eps)": (
                w * (gamma / np.sqrt(var))[:, None],
                (b - mean) * gamma / np.sqrt(var) + beta,
            ),
            "the layer's bias goes through the normalization too: "
            "b_fold = scale * (b - running_mean) + beta": (w * s[:, None], -mean * s + beta),
        }
        if w.shape[0] == w.shape[1]:  # only a square W can be scaled the wrong way round silently
            why = (
                "you scaled the columns (inputs); output feature c is row W[c], scaled by scale[c]"
            )
            mistakes[why] = (w * s[None, :], case.expected[1])
        cases.append((case, mistakes))
    return _run_with_mistakes(fn, cases, what="fold BatchNorm into the previous layer")


def check_fold_bn_into_next(fn) -> Result:
    """``fn(W, b, running_mean, running_var, gamma, beta, eps) -> (W_fold, b_fold)`` (NumPy) with
    ``W_fold @ h + b_fold == W @ bn(h) + b``: the BatchNorm (over the C input features of the
    Linear layer ``W``: (out, C)) folded into the layer AFTER it."""
    cases = []
    for name, w, b, rng, eps in _fold_cases(
        [("square 5 -> 5", 5, 5, 1e-5), ("4 -> 3 features", 3, 4, 1e-5), ("large eps", 2, 6, 0.5)]
    ):
        mean, var, gamma, beta, eps = _bn_params(rng, w.shape[1], eps=eps)
        s = _scale(var, gamma, eps)
        case = Case(
            name,
            (w, b, mean, var, gamma, beta, eps),
            expected=(w * s[None, :], b + w @ (beta - s * mean)),
            hint="write W bn(h) + b = W (scale * h + shift) + b as one affine map of h.",
        )
        mistakes = {}
        if w.shape[0] == w.shape[1]:  # only with a square W do these wrong answers have the shapes
            why = "the BatchNorm's shift goes through W too: b_fold = b + W @ (beta - scale * mean)"
            mistakes[why] = (w * s[None, :], b + beta - s * mean)
            why = "here BatchNorm normalizes the INPUTS of W: scale its columns, W * scale[None, :]"
            mistakes[why] = (w * s[:, None], case.expected[1])
        cases.append((case, mistakes))
    return _run_with_mistakes(fn, cases, what="fold BatchNorm into the next layer")


def _run_with_mistakes(fn, cases, *, what) -> Result:
    """Run case by case; when a wrong answer matches a known mistake, name it."""
    last = {}

    def recording(*args):
        last["got"] = fn(*args)
        return last["got"]

    for case, mistakes in cases:
        last.clear()
        result = run_cases(recording, [case], what=what, rtol=1e-9, atol=1e-12)
        if result:
            continue
        for hint, wrong in mistakes.items():
            if "got" in last and compare(last["got"], wrong) is None:
                return Result(False, f"❌ {what}, case '{case.name}': {hint}.")
        return result
    return Result(True, f"✅ {what}: all {len(cases)} cases pass.")


def _placement_models(seed):
    """Two small fp64 models with biases before and after BatchNorms, and a batch for each."""
    import torch
    from torch import nn

    from .. import nn as nlnn

    torch.manual_seed(seed)
    mlp = nn.Sequential(
        nn.Linear(6, 8), nlnn.BatchNorm1d(8), nn.ReLU(),  # bias before BN: redundant
        nn.Linear(8, 8), nn.ReLU(), nlnn.BatchNorm1d(8),  # bias before ReLU: matters
        nn.Linear(8, 3),  # no BN after: matters
    ).double()  # fmt: skip
    cnn = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nlnn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3), nn.ReLU(), nlnn.BatchNorm2d(4),
        nn.Conv2d(4, 5, 1), nlnn.BatchNorm2d(5),
    ).double()  # fmt: skip
    with torch.no_grad():
        for model in (mlp, cnn):
            for m in model.modules():
                if getattr(m, "bias", None) is not None:
                    m.bias.uniform_(-2, 2)  # biases far from 0, so dropping a needed one shows
    gen = torch.Generator().manual_seed(seed)
    x_mlp = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    x_cnn = torch.randn(3, 2, 6, 6, generator=gen, dtype=torch.float64)
    return [("MLP", mlp, x_mlp, {0}), ("CNN", cnn, x_cnn, {0, 6})]


def check_remove_redundant_biases(fn) -> Result:
    """``fn(model)``: set to None the bias of every Linear/Conv layer that a BatchNorm directly
    follows in the ``nn.Sequential`` ``model`` (in place, or return the new model); the outputs in
    training mode must not change, and every other bias must stay."""
    import torch

    what = "remove redundant biases"
    for name, model, x, redundant in _placement_models(0):
        model.train()
        with torch.no_grad():
            expected = model(x)
        try:
            out = fn(model)
        except NotImplementedError:
            return Result(
                False,
                f"❌ {what}: not implemented yet (the function raises NotImplementedError). "
                "Replace the `raise` with your code.",
            )
        except Exception as exc:  # the reader's bug: report it, don't raise it
            return Result(
                False,
                f"❌ {what}, case '{name}': your function raised {type(exc).__name__}: {exc}.",
            )
        model = out if isinstance(out, torch.nn.Module) else model
        for i, layer in enumerate(model):
            if not hasattr(layer, "bias") or "BatchNorm" in type(layer).__name__:
                continue
            if i in redundant and layer.bias is not None:
                return Result(
                    False,
                    f"❌ {what}, case '{name}': model[{i}] ({type(layer).__name__}) still has a "
                    "bias, and a BatchNorm follows it directly. Hint: `layer.bias = None`.",
                )
            if i not in redundant and layer.bias is None:
                after = type(model[i + 1]).__name__ if i + 1 < len(model) else "nothing"
                return Result(
                    False,
                    f"❌ {what}, case '{name}': model[{i}] lost its bias, but it is followed by "
                    f"{after}, not a BatchNorm. Hint: ReLU(z + b) is not a shifted ReLU(z), so "
                    "that bias matters.",
                )
        with torch.no_grad():
            why = compare(model(x), expected, rtol=1e-9, atol=1e-10)
        if why:
            return Result(
                False,
                f"❌ {what}, case '{name}': the training-mode output changed ({why}). Hint: "
                "remove the biases, change nothing else (not the BatchNorms' own bias, beta).",
            )
    return Result(True, f"✅ {what}: both models pass.")


# Exercise 4 of chapter 4: the patterns that fold exactly into one layer at inference.
_FOLDABLE = "ac"
_WHY = {
    "a": "(a) Conv -> BN in eval mode is the textbook case: scale each filter, shift the bias.",
    "b": "(b) the ReLU sits between the conv and the BN: max(0, z) is not affine, so the BN "
    "cannot move back through it.",
    "c": "(c) a BN right BEFORE a Linear folds into it: W (s * h + t) + b = (W s) h + (W t + b).",
    "d": "(d) in training mode BN uses each batch's own statistics: no fixed affine map to fold.",
    "e": "(e) with track_running_stats=False, eval mode also uses batch statistics.",
    "f": "(f) the next conv zero-pads the BN's output; after folding it would zero-pad the BN's "
    "input, and BN(0) = beta - scale * mean is not 0: the borders differ.",
}


def check_foldable(answer) -> Result:
    """``answer``: the letters of the patterns that fold exactly into a single layer, e.g. "ab"."""
    if not isinstance(answer, str):
        return Result(False, f"❌ expected a string of letters such as 'ab', got {answer!r}.")
    got = set(answer.lower()) - set(" ,")
    if got - set(_WHY):
        return Result(
            False, f"❌ there is no pattern {sorted(got - set(_WHY))}: choose from a to f."
        )
    if got == set(_FOLDABLE):
        return Result(True, "✅ correct: (a) and (c) fold exactly.")
    return Result(False, "❌ not quite. Hint: " + _WHY[sorted(got ^ set(_FOLDABLE))[0]])
