"""Auto-checks for the exercises of the chapter "Implementation details"
(book/08_implementation.ipynb).

Expected answers come from running torch's and normlib's modules, never from typed-in values.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .. import nn as nnn
from ._check import Case, Result, run_cases

# -------------------------------------------------------------------------------------------------
# Exercise: the keys of a BatchNorm state_dict


def state_dict_keys(prefix, affine, track_running_stats) -> list[str]:
    """The keys, in order, of the state_dict of
    ``torch.nn.BatchNorm2d(..., affine, track_running_stats)`` under ``prefix``: torch answers."""
    bn = torch.nn.BatchNorm2d(4, affine=affine, track_running_stats=track_running_stats)
    return list(bn.state_dict(prefix=prefix))


def _keys_without_counter(prefix, affine, track_running_stats):
    return [
        k
        for k in state_dict_keys(prefix, affine, track_running_stats)
        if not k.endswith("num_batches_tracked")
    ]


def _keys_always_buffers(prefix, affine, track_running_stats):
    params = [prefix + "weight", prefix + "bias"] if affine else []
    return params + [prefix + k for k in ("running_mean", "running_var", "num_batches_tracked")]


def _keys_no_prefix(prefix, affine, track_running_stats):
    return state_dict_keys("", affine, track_running_stats)


def check_state_dict_keys(fn) -> Result:
    """``fn(prefix, affine, track_running_stats) -> list of keys`` of a BatchNorm2d's state_dict."""
    combos = [
        ("", True, True),
        ("", False, True),
        ("", True, False),
        ("", False, False),
        ("features.1.", True, True),
    ]
    cases = [
        Case(
            f"prefix={p!r}, affine={a}, track_running_stats={t}",
            (p, a, t),
            expected=state_dict_keys(p, a, t),
            hint="parameters (weight, bias) come first, then buffers (running_mean, running_var, "
            "num_batches_tracked); each exists only if its flag is on.",
        )
        for p, a, t in combos
    ]
    mistakes = [
        (
            _keys_without_counter,
            "num_batches_tracked is a buffer too (a long counter of training "
            "steps, used when momentum=None), saved with the running statistics.",
        ),
        (
            _keys_always_buffers,
            "with track_running_stats=False the buffers are registered as None, "
            "and None buffers are not saved.",
        ),
        (
            _keys_no_prefix,
            "every key starts with the module's prefix (its path in the model, "
            "e.g. 'features.1.').",
        ),
    ]
    return run_cases(fn, cases, what="state_dict keys", mistakes=mistakes)


# -------------------------------------------------------------------------------------------------
# Exercise: freeze BatchNorm for fine-tuning


def _freeze_test_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        nnn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        nnn.GroupNorm(2, 4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(4 * 5 * 5, 6),
        nnn.BatchNorm1d(6),
    )


def _is_bn(module) -> bool:
    return isinstance(module, (nnn.BatchNorm1d, nnn.BatchNorm2d, nnn.BatchNorm3d))


def reference_freeze_bn(model):
    """Freeze every BatchNorm of ``model`` (call after ``model.train()``): eval mode, so its
    running statistics are used and no longer updated, and ``requires_grad=False`` on its weight
    and bias."""
    for module in model.modules():
        if _is_bn(module):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
    return model


def check_freeze_bn(fn) -> Result:
    """``fn(model)`` freezes the BatchNorm layers of ``model`` (in train mode) in place."""
    what = "freeze_bn"
    model = _freeze_test_model().train()
    before = copy.deepcopy(model.state_dict())
    try:
        returned = fn(model)
    except NotImplementedError:
        return Result(
            False,
            f"❌ {what}: not implemented yet (the function raises "
            "NotImplementedError). Replace the `raise` with your code.",
        )
    except Exception as exc:  # the reader's bug: report it
        return Result(False, f"❌ {what}: your function raised {type(exc).__name__}: {exc}.")
    if returned is not None and returned is not model:
        return Result(
            False,
            f"❌ {what}: freeze the model in place (return nothing, or the same "
            "model), not a copy.",
        )
    bns = [m for m in model.modules() if _is_bn(m)]
    x = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 2 + 1
    with torch.no_grad():
        model(x)
    after = model.state_dict()
    moved = [
        k for k in before if k.endswith("running_mean") and not torch.equal(before[k], after[k])
    ]
    if moved:
        return Result(
            False,
            f"❌ {what}: a forward pass still changed {moved[0]}. Hint: the "
            "running statistics update whenever a BatchNorm is in training mode; "
            "call .eval() on each BatchNorm layer (requires_grad does not stop it).",
        )
    if any(p.requires_grad for m in bns for p in m.parameters()):
        return Result(
            False,
            f"❌ {what}: BatchNorm's weight (gamma) and bias (beta) still require "
            "grad, so the optimizer would still change them. Hint: eval() does not "
            "touch requires_grad; set p.requires_grad_(False) on them too.",
        )
    others = [
        n
        for n, p in model.named_parameters()
        if not p.requires_grad
        and not any(n.startswith(f"{i}.") for i, m in enumerate(model) if _is_bn(m))
    ]
    if others:
        return Result(
            False,
            f"❌ {what}: you froze {others[0]} too: only BatchNorm's parameters "
            "should stop training (the GroupNorm and the convolutions fine-tune).",
        )
    if not model[7].training:
        return Result(
            False,
            f"❌ {what}: the Dropout layer is in eval mode: call .eval() on the "
            "BatchNorm layers only, not on the whole model.",
        )
    if not model[4].training:
        return Result(
            False,
            f"❌ {what}: the GroupNorm is in eval mode too: only BatchNorm has "
            "running statistics to freeze.",
        )
    return Result(
        True,
        f"✅ {what}: {len(bns)} BatchNorm layers frozen (eval mode, gamma/beta "
        "without grad); everything else still trains.",
    )


# -------------------------------------------------------------------------------------------------
# Exercise: which of these change running_mean?


def _scenario(kind: str) -> bool:
    """Run scenario ``kind`` on a fresh normlib BatchNorm1d; True if its running_mean changed."""
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)) * 2 + 1
    track = kind != "e"
    bn = nnn.BatchNorm1d(3, momentum=0.0 if kind == "f" else 0.1, track_running_stats=track)
    before = None if bn.running_mean is None else bn.running_mean.clone()
    if kind == "a":
        bn.train()
        with torch.no_grad():
            bn(x)
    elif kind == "b":
        bn.eval()
        bn(x)
    elif kind == "c":
        bn.train()
        bn.weight.requires_grad_(False)
        bn.bias.requires_grad_(False)
        bn(x)
    elif kind == "d":
        bn.train()
        with torch.inference_mode():
            bn(x)
    elif kind in ("e", "f"):
        bn.train()
        bn(x)
    else:
        raise ValueError(kind)
    return before is not None and not torch.equal(before, bn.running_mean)


SCENARIOS = {
    "a": "bn.train(), then a forward pass inside `with torch.no_grad():`",
    "b": "bn.eval(), then a forward pass",
    "c": "bn.train(), weight and bias set to requires_grad=False, then a forward pass",
    "d": "bn.train(), then a forward pass inside `with torch.inference_mode():`",
    "e": "BatchNorm1d(3, track_running_stats=False), bn.train(), then a forward pass",
    "f": "BatchNorm1d(3, momentum=0.0), bn.train(), then a forward pass",
}

_SCENARIO_HINTS = {
    "a": "no_grad only turns off gradient recording; the module is still in training mode and "
    "updates its running statistics.",
    "b": "in eval mode BatchNorm reads the running statistics and never writes them.",
    "c": "requires_grad on gamma/beta decides whether the OPTIMIZER changes them; the running "
    "statistics are buffers updated by the forward pass in training mode.",
    "d": "inference_mode is no_grad made stricter and faster: still nothing to do with train/eval.",
    "e": "without tracking there is no running_mean at all (it is None): nothing can change.",
    "f": "with momentum 0 the update is running = 1 * running + 0 * batch: unchanged (but "
    "num_batches_tracked still counts the batch).",
}


def running_mean_changes() -> set[str]:
    """The scenarios of :data:`SCENARIOS` in which running_mean changes, measured."""
    return {k for k in SCENARIOS if _scenario(k)}


def check_running_mean_changes(answer) -> Result:
    """``answer``: the set of scenario letters in which ``running_mean`` changes."""
    what = "running_mean changes"
    if isinstance(answer, str):
        answer = set(answer.replace(",", " ").split())
    try:
        got = {str(a).strip().lower() for a in answer}
    except TypeError:
        return Result(
            False,
            f"❌ {what}: expected a set of letters like {{'a', 'b'}}, got {type(answer).__name__}.",
        )
    unknown = got - set(SCENARIOS)
    if unknown:
        return Result(
            False,
            f"❌ {what}: unknown scenario(s) {sorted(unknown)}; choose from {sorted(SCENARIOS)}.",
        )
    truth = running_mean_changes()
    for k in sorted(SCENARIOS):
        if (k in got) != (k in truth):
            said = "changes" if k in got else "does not change"
            return Result(
                False,
                f"❌ {what}: you said running_mean {said} in scenario {k} "
                f"({SCENARIOS[k]}). Hint: {_SCENARIO_HINTS[k]}",
            )
    return Result(True, f"✅ {what}: right for all {len(SCENARIOS)} scenarios.")


# -------------------------------------------------------------------------------------------------
# Exercise: fold an eval-mode BatchNorm into the convolution before it


def fold_reference(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    """``(W', b')`` from :func:`normlib.nn.fusion.fuse_conv_bn_weights`, as float64 NumPy arrays."""
    from ..nn.fusion import fuse_conv_bn_weights

    t = [
        torch.as_tensor(np.asarray(a, dtype=np.float64))
        for a in (weight, bias, running_mean, running_var, gamma, beta)
    ]
    w, b = fuse_conv_bn_weights(t[0], t[1], t[2], t[3], eps, t[4], t[5])
    return w.detach().numpy(), b.detach().numpy()


def _fold_no_eps(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    return fold_reference(weight, bias, running_mean, running_var, gamma, beta, eps=0.0)


def _fold_std_not_var(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    return fold_reference(weight, bias, running_mean, running_var**2, gamma, beta, eps)


def _fold_bias_unscaled(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    scale = gamma / np.sqrt(running_var + eps)
    return weight * scale.reshape(-1, 1, 1, 1), bias - running_mean * scale + beta


def _fold_no_mean(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    return fold_reference(weight, bias, np.zeros_like(running_mean), running_var, gamma, beta, eps)


def check_fold_bn(fn) -> Result:
    """``fn(weight, bias, running_mean, running_var, gamma, beta, eps) -> (W', b')``: the conv
    ``weight`` (C_out, C_in, kH, kW) and ``bias`` (C_out,) of a layer followed by an eval-mode
    BatchNorm."""
    rng = np.random.default_rng(5)
    cases = []
    for name, (c_out, c_in, k) in {
        "3x3 conv, 4 -> 6 channels": (6, 4, 3),
        "1x1 conv, 3 -> 2 channels": (2, 3, 1),
        "5x5 conv, 1 -> 5 channels": (5, 1, 5),
    }.items():
        args = (
            rng.normal(size=(c_out, c_in, k, k)),
            rng.normal(size=c_out),
            rng.normal(1.0, 2.0, size=c_out),
            rng.uniform(0.5, 3.0, size=c_out),
            rng.normal(1.0, 0.3, size=c_out),
            rng.normal(size=c_out),
        )
        cases.append(
            Case(
                name,
                args,
                kwargs={"eps": 1e-5},
                expected=fold_reference(*args),
                hint="scale = gamma / sqrt(running_var + eps) per OUTPUT channel; "
                "W' = W * scale[:, None, None, None]; "
                "b' = (b - running_mean) * scale + beta.",
            )
        )
    args = (
        rng.normal(size=(3, 2, 3, 3)),
        rng.normal(size=3),
        rng.normal(size=3),
        np.array([1e-4, 2e-4, 5e-5]),
        np.ones(3),
        np.zeros(3),
    )
    cases.append(
        Case(
            "tiny running variance (eps matters)",
            args,
            kwargs={"eps": 1e-3},
            expected=fold_reference(*args, eps=1e-3),
            hint="eps goes inside the square root, with the running variance.",
        )
    )
    mistakes = [
        (_fold_no_eps, "you left out eps: BatchNorm divides by sqrt(running_var + eps)."),
        (_fold_std_not_var, "running_var is a variance: take its square root (after adding eps)."),
        (
            _fold_bias_unscaled,
            "the conv bias goes through the BatchNorm too: "
            "b' = (b - running_mean) * scale + beta, so b is scaled as well.",
        ),
        (
            _fold_no_mean,
            "subtract running_mean: eval-mode BN computes (z - running_mean) * scale + beta.",
        ),
    ]
    return run_cases(fn, cases, what="fold_bn", mistakes=mistakes, rtol=1e-6, atol=1e-8)


__all__ = [
    "SCENARIOS",
    "check_fold_bn",
    "check_freeze_bn",
    "check_running_mean_changes",
    "check_state_dict_keys",
    "fold_reference",
    "reference_freeze_bn",
    "running_mean_changes",
    "state_dict_keys",
]
