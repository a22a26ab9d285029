"""The checks of chapter 05 (Benefits) accept right answers, reject wrong ones with the specific
hint, and turn a reader's exception into a message; the chapter's explorer draws distinct frames."""

from __future__ import annotations

import pytest
import torch
from _notebook import assert_reports_exceptions, notebook_cell_namespace
from _notebook import hint as _hint
from _notebook import ok as _ok

from normlib.exercises import benefits as ex


def test_grad_norms():
    def right(model, X, y):
        model.train()
        for p in model.parameters():
            p.grad = None
        torch.nn.functional.cross_entropy(model(X), y).backward()
        return [m.weight.grad.norm().item() for m in model if isinstance(m, torch.nn.Linear)]

    assert _ok(ex.check_grad_norms(right))
    assert _hint(ex.check_grad_norms(ex._norms_no_zero_grad), "zero_grad")
    assert _hint(ex.check_grad_norms(ex._norms_eval_mode), "model.train()")
    assert _hint(ex.check_grad_norms(ex._norms_of_weights), "norms of the weights")
    assert _hint(ex.check_grad_norms(ex._norms_reversed), "reverse order")


def test_grad_norms_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    ex.check_grad_norms(ex.grad_norms_per_layer)
    assert torch.equal(before, torch.get_rng_state())


def test_bn_scale():
    def right(W, x, dy, a):
        res = []
        for s in (1.0, a):
            V = (s * W).detach().requires_grad_()
            out = torch.nn.functional.batch_norm(x @ V.T, None, None, training=True, eps=1e-5)
            (out * dy).sum().backward()
            res.append((out.detach(), V.grad.norm()))
        return (res[1][0] - res[0][0]).abs().max().item(), (res[1][1] / res[0][1]).item()

    assert _ok(ex.check_bn_scale(right))
    wrt_w = ex.check_bn_scale(lambda W, x, dy, a: ex.bn_scale_check(W, x, dy, a, _wrt_w=True))
    assert _hint(wrt_w, "with respect to W")
    evalm = ex.check_bn_scale(lambda W, x, dy, a: ex.bn_scale_check(W, x, dy, a, _eval=True))
    assert _hint(evalm, "eval mode")
    # the expected ratio is 1/a (the check's reference is right, not just self-consistent)
    W, x, dy = torch.randn(4, 3, dtype=torch.float64), torch.randn(9, 3), torch.randn(9, 4)
    assert ex.bn_scale_check(W, x, dy, 4.0)[1] == pytest.approx(0.25, rel=1e-4)  # eps


def test_dropout_variance_ratio():
    def right(p, mean, var):
        return var / ((var + mean**2) / (1 - p) - mean**2)

    assert _ok(ex.check_dropout_variance_ratio(right))
    assert _hint(ex.check_dropout_variance_ratio(ex._ratio_no_mean), "left out the mean")
    assert _hint(ex.check_dropout_variance_ratio(ex._ratio_inverted), "train / test")
    assert _hint(ex.check_dropout_variance_ratio(ex._ratio_of_stds), "standard deviations")
    # the reference against a Monte-Carlo estimate with torch's Dropout
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400_000, generator=gen, dtype=torch.float64) * 1.5 + 0.8
    drop = torch.nn.Dropout(0.3).train()
    torch.manual_seed(1)  # not 0: the mask would reuse the stream that drew x, correlated with it
    mc = x.var().item() / drop(x).var().item()
    assert ex.dropout_variance_ratio(0.3, 0.8, 2.25) == pytest.approx(mc, rel=0.02)


def test_steps_to_target():
    def right(acc, spe, target):
        return next(((i + 1) * spe for i, a in enumerate(acc) if a >= target), None)

    assert _ok(ex.check_steps_to_target(right))
    assert _hint(ex.check_steps_to_target(ex._steps_zero_based), "off by one")
    assert _hint(ex.check_steps_to_target(ex._steps_last_crossing), "take the first")
    assert _hint(ex.check_steps_to_target(ex._steps_never_as_total), "return None")


@pytest.mark.parametrize(
    "check",
    [
        ex.check_grad_norms,
        ex.check_bn_scale,
        ex.check_dropout_variance_ratio,
        ex.check_steps_to_target,
    ],
)
def test_raising_and_unimplemented_give_messages(check):
    assert_reports_exceptions(check)


def test_explorer_frames_differ():
    ns = notebook_cell_namespace("05_benefits.ipynb", "def draw_lr_init(")
    draw, grid = ns["draw_lr_init"], ns["lr_grid_results"]
    import matplotlib.pyplot as plt

    pngs = []
    for lr in (grid["lrs"][1], grid["lrs"][-2]):
        fig = draw(lr=lr, init_scale=grid["scales"][0])
        assert len(fig.axes) == 2 and all(ax.get_title() for ax in fig.axes)
        pngs.append(_png(fig))
        plt.close(fig)
    assert pngs[0] != pngs[1]


def _png(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()
