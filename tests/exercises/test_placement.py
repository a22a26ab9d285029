"""The checks of chapter 4's exercises accept right answers and name the mistake in wrong ones."""

from __future__ import annotations

import json
import pathlib

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

import normlib.nn as nlnn
from normlib.exercises import placement as ex


def fold_linear_bn(w, b, running_mean, running_var, gamma, beta, eps):
    scale = gamma / np.sqrt(running_var + eps)
    return w * scale[:, None], (b - running_mean) * scale + beta


def fold_bn_into_next(w, b, running_mean, running_var, gamma, beta, eps):
    scale = gamma / np.sqrt(running_var + eps)
    return w * scale[None, :], b + w @ (beta - scale * running_mean)


def test_fold_linear_bn():
    assert ex.check_fold_linear_bn(fold_linear_bn)

    def no_eps(w, b, mean, var, gamma, beta, eps):
        return fold_linear_bn(w, b, mean, var, gamma, beta, 0.0)

    def forgets_b(w, b, mean, var, gamma, beta, eps):
        return fold_linear_bn(w, np.zeros_like(b), mean, var, gamma, beta, eps)

    def columns(w, b, mean, var, gamma, beta, eps):
        scale = gamma / np.sqrt(var + eps)
        return w * scale[None, :], (b - mean) * scale + beta

    for fn, needle in [
        (no_eps, "inside the square root"),
        (forgets_b, "layer's bias goes"),
        (columns, "scaled the columns"),  # named on the first, square, case
    ]:
        result = ex.check_fold_linear_bn(fn)
        assert not result and needle in repr(result), repr(result)


def test_fold_linear_bn_agrees_with_normlib_fusion():
    """The exercise's answer is what normlib.nn.fusion computes."""
    from normlib.nn.fusion import fuse_linear_bn_weights

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    mean, var, gamma, beta = (
        rng.normal(size=3),
        rng.uniform(1, 2, 3),
        rng.normal(size=3),
        rng.normal(size=3),
    )
    want = fold_linear_bn(w, b, mean, var, gamma, beta, 1e-5)
    t = [torch.from_numpy(a) for a in (w, b, mean, var)]
    got = fuse_linear_bn_weights(*t, 1e-5, torch.from_numpy(gamma), torch.from_numpy(beta))
    for g, e in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), e, rtol=1e-12)


def test_fold_bn_into_next():
    assert ex.check_fold_bn_into_next(fold_bn_into_next)

    def shift_not_through_w(w, b, mean, var, gamma, beta, eps):
        scale = gamma / np.sqrt(var + eps)
        return w * scale[None, :], b + beta - scale * mean

    result = ex.check_fold_bn_into_next(shift_not_through_w)
    assert not result and "goes through W" in repr(result)
    result = ex.check_fold_bn_into_next(fold_linear_bn)
    assert not result and repr(result).startswith("❌")

    def raises(*args):
        raise ValueError("shapes")

    assert "ValueError: shapes" in repr(ex.check_fold_bn_into_next(raises))
    assert "not implemented" in repr(ex.check_fold_bn_into_next(_not_implemented))


def _not_implemented(*args):
    raise NotImplementedError


def is_bn(module):
    return getattr(module, "running_mean", None) is not None


def remove_redundant_biases(model):
    for layer, after in zip(model, list(model)[1:]):
        if isinstance(layer, (nn.Linear, nn.Conv2d)) and is_bn(after):
            layer.bias = None


def test_remove_redundant_biases():
    assert ex.check_remove_redundant_biases(remove_redundant_biases)

    def all_biases(model):
        for layer in model:
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                layer.bias = None

    def none(model):
        return model

    def also_beta(model):
        remove_redundant_biases(model)
        for layer in model:
            if is_bn(layer):
                with torch.no_grad():
                    layer.bias.zero_()

    def zeroes_instead(model):  # zeroing is fine for the output but leaves the parameter
        for layer, after in zip(model, list(model)[1:]):
            if isinstance(layer, (nn.Linear, nn.Conv2d)) and is_bn(after):
                with torch.no_grad():
                    layer.bias.zero_()

    expectations = {
        all_biases: "lost its bias",
        none: "still has a bias",
        also_beta: "output changed",
        zeroes_instead: "still has a bias",
    }
    for fn, needle in expectations.items():
        result = ex.check_remove_redundant_biases(fn)
        assert not result and needle in repr(result), (fn.__name__, repr(result))
    assert "not implemented" in repr(ex.check_remove_redundant_biases(_not_implemented))
    assert "KeyError" in repr(ex.check_remove_redundant_biases(lambda m: {}["x"]))


def test_foldable():
    assert ex.check_foldable("ac")
    assert ex.check_foldable("C, a")
    for wrong, needle in [("a", "(c)"), ("acf", "zero-pads"), ("abc", "ReLU"), ("acd", "training")]:
        result = ex.check_foldable(wrong)
        assert not result and needle in repr(result), (wrong, repr(result))
    assert "choose from a to f" in repr(ex.check_foldable("ax"))
    assert not ex.check_foldable(["a", "c"])


def test_foldable_answer_key_on_padding():
    """(c) folds exactly, (f) does not: zero padding after the BN breaks the fold at the borders."""
    torch.manual_seed(0)
    bn = nlnn.BatchNorm2d(3).double().eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    h = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - scale * bn.running_mean
    for padding, exact in [(0, True), (1, False)]:
        conv = nn.Conv2d(3, 4, 3, padding=padding).double()
        folded = nn.Conv2d(3, 4, 3, padding=padding).double()
        with torch.no_grad():
            folded.weight.copy_(conv.weight * scale[None, :, None, None])
            folded.bias.copy_(conv.bias + (conv.weight.sum((2, 3)) * shift).sum(1))
        assert torch.allclose(folded(h), conv(bn(h)), atol=1e-12) == exact


# The chapter's explorer: its draw function, taken from the notebook, on synthetic snapshots.
NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "book" / "04_placement.ipynb"


def test_explorer_frames_differ_by_step_and_report_the_zeros():
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    found = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [s for s in found if "def draw_activations(" in s]
    assert len(found) == 1, f"expected one cell defining draw_activations, found {len(found)}"
    namespace = {"np": np, "plt": plt}
    exec(found[0], namespace)  # noqa: S102 (our own notebook's cell)
    draw = namespace["draw_activations"]

    rng = np.random.default_rng(0)
    snapshots = {
        "no BN": {
            0: [rng.normal(0, 3, 500), rng.normal(0, 3, 500)],
            8: [rng.normal(1, 1, 500)] * 2,
        },
        "BN → ReLU": {0: [np.maximum(rng.normal(size=500), 0)] * 2, 8: [np.zeros(500)] * 2},
    }

    def heights(fig):
        out = [np.array([p.get_height() for p in ax.patches]) for ax in fig.axes]
        titles = [ax.get_title() for ax in fig.axes]
        plt.close(fig)
        return out, titles

    (h0, titles0), (h8, titles8) = heights(draw(0, 1, snapshots)), heights(draw(8, 1, snapshots))
    assert len(h0) == 2 and all(not np.allclose(a, b) for a, b in zip(h0, h8))
    assert "zeros 100%" in titles8[1] and "zeros 0%" in titles8[0]
    assert "BN → ReLU" in titles0[1]
