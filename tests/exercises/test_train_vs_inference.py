"""The checks of chapter 3's exercises accept right answers and name the mistake in wrong ones."""

from __future__ import annotations

import json
import math
import pathlib

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from normlib.exercises import train_vs_inference as ex


def running_stats(batches, momentum):
    mean, var = np.zeros(batches[0].shape[1]), np.ones(batches[0].shape[1])
    for t, x in enumerate(batches, start=1):
        factor = 1.0 / t if momentum is None else momentum
        mean = (1 - factor) * mean + factor * x.mean(axis=0)
        var = (1 - factor) * var + factor * x.var(axis=0, ddof=1)
    return mean, var


def keras_sense(batches, momentum):
    mean, var = np.zeros(batches[0].shape[1]), np.ones(batches[0].shape[1])
    for x in batches:
        mean = momentum * mean + (1 - momentum) * x.mean(axis=0)
        var = momentum * var + (1 - momentum) * x.var(axis=0, ddof=1)
    return mean, var


def biased_var(batches, momentum):
    mean, var = np.zeros(batches[0].shape[1]), np.ones(batches[0].shape[1])
    for t, x in enumerate(batches, start=1):
        factor = 1.0 / t if momentum is None else momentum
        mean = (1 - factor) * mean + factor * x.mean(axis=0)
        var = (1 - factor) * var + factor * x.var(axis=0)
    return mean, var


def test_running_stats():
    assert ex.check_running_stats(running_stats)
    result = ex.check_running_stats(keras_sense)
    assert not result and "Keras" in repr(result) and "0.1, 3 batches" in repr(result)
    result = ex.check_running_stats(biased_var)
    assert not result and "UNBIASED" in repr(result)

    def no_cumulative(batches, momentum):
        return running_stats(batches, 0.1 if momentum is None else momentum)

    result = ex.check_running_stats(no_cumulative)
    assert not result and "momentum=None" in repr(result) and "1 / t" in repr(result)


def test_running_stats_raising_or_missing_gives_a_hint():
    def broken(batches, momentum):
        return batches[0].mean(axis=2)

    for fn in (broken, lambda b, m: (_ for _ in ()).throw(NotImplementedError)):
        result = ex.check_running_stats(fn)
        assert not result and repr(result).startswith("❌")
    assert "AxisError" in repr(ex.check_running_stats(broken))


def test_steps_to_forget():
    def right(momentum, fraction):
        t, weight = 0, 1.0
        while weight > fraction * (1 + 1e-12):
            weight *= 1 - momentum
            t += 1
        return t

    assert ex.check_steps_to_forget(right)
    assert ex.check_steps_to_forget(lambda m, f: float(right(m, f)))  # 44.0 is fine
    result = ex.check_steps_to_forget(lambda m, f: right(1 - m, f) if m < 1 else 1)
    assert not result and "Keras" in repr(result)
    off_by_one = ex.check_steps_to_forget(lambda m, f: right(m, f) - 1)
    assert not off_by_one and "expected 44, got 43" in repr(off_by_one)
    floor = ex.check_steps_to_forget(lambda m, f: math.floor(math.log(f) / math.log(1 - m)))
    assert not floor and repr(floor).startswith("❌")


def recalibrate(model, batches):
    bns = [m for m in model.modules() if getattr(m, "running_mean", None) is not None]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.eval()


def test_recalibrate_right():
    assert ex.check_recalibrate(recalibrate)

    def returns_a_copy(model, batches):
        import copy

        model = copy.deepcopy(model)
        recalibrate(model, batches)
        return model

    assert ex.check_recalibrate(returns_a_copy)


def test_recalibrate_wrong():
    def stays_in_train(model, batches):
        recalibrate(model, batches)
        model.train()

    def no_reset(model, batches):
        bns = [m for m in model.modules() if getattr(m, "running_mean", None) is not None]
        for bn in bns:
            bn.momentum = None
        model.train()
        with torch.no_grad():
            for x in batches:
                model(x)
        for bn in bns:
            bn.momentum = 0.1
        model.eval()

    def ema(model, batches):  # reset, but keep momentum 0.1
        for m in model.modules():
            if getattr(m, "running_mean", None) is not None:
                m.reset_running_stats()
        model.train()
        with torch.no_grad():
            for x in batches:
                model(x)
        model.eval()

    def keeps_none(model, batches):
        recalibrate(model, batches)
        for m in model.modules():
            if getattr(m, "running_mean", None) is not None:
                m.momentum = None

    def trains(model, batches):
        recalibrate(model, batches)
        with torch.no_grad():
            model[0].weight.mul_(2)

    def torch_update_bn(model, batches):
        torch.optim.swa_utils.update_bn(batches, model)

    expectations = {
        stays_in_train: "model.eval()",
        no_reset: "reset_running_stats",
        ema: "momentum=None",
        keeps_none: "put it back",
        trains: "parameter 0.weight changed",
        torch_update_bn: "did not change",
    }
    for fn, needle in expectations.items():
        result = ex.check_recalibrate(fn)
        assert not result, fn.__name__
        assert needle in repr(result), (fn.__name__, repr(result))

    def raises(model, batches):
        raise RuntimeError("oops")

    assert "RuntimeError: oops" in repr(ex.check_recalibrate(raises))

    def missing(model, batches):
        raise NotImplementedError

    assert "not implemented yet" in repr(ex.check_recalibrate(missing))


def test_stats_unchanged():
    assert ex.check_stats_unchanged("adf")
    assert ex.check_stats_unchanged("f, d, A")
    for wrong, needle in [("acdf", "inference_mode"), ("ad", "(f)"), ("abdf", "no_grad")]:
        result = ex.check_stats_unchanged(wrong)
        assert not result and needle in repr(result), (wrong, repr(result))
    assert "choose from a to f" in repr(ex.check_stats_unchanged("adz"))
    assert not ex.check_stats_unchanged(3)


def test_stats_unchanged_answer_is_true():
    """The answer key matches what torch and normlib.nn do."""
    import normlib.nn as nlnn

    x = torch.randn(16, 3) + 2
    for mod in (torch.nn, nlnn):
        snippets = {
            "a": lambda bn: (bn.eval(), bn(x)),
            "b": lambda bn: (bn.train(), _under(torch.no_grad, bn, x)),
            "c": lambda bn: (bn.train(), _under(torch.inference_mode, bn, x)),
            "d": lambda bn: (bn.train(), setattr(bn, "momentum", 0.0), bn(x)),
            "e": lambda bn: (bn.train(), bn(x.detach())),
            "f": lambda bn: (bn.eval(), setattr(bn, "momentum", None), bn(x)),
        }
        unchanged = ""
        for letter, run in snippets.items():
            bn = mod.BatchNorm1d(3)
            run(bn)
            if torch.equal(bn.running_mean, torch.zeros(3)):
                unchanged += letter
        assert unchanged == ex._UNCHANGED


def _under(context, bn, x):
    with context():
        return bn(x)


# The chapter's explorer: its draw function, taken from the notebook (it needs only NumPy and
# matplotlib), draws the running mean of the chosen convention and momentum.
NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "book" / "03_train_vs_inference.ipynb"


def cell_defining(name):
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    found = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [s for s in found if f"def {name}(" in s]
    assert len(found) == 1, f"expected one cell defining {name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def draw():
    matplotlib.use("Agg")
    namespace = {"np": np, "plt": plt}
    exec(cell_defining("ema"), namespace)  # noqa: S102 (our own notebook's cells)
    exec(cell_defining("draw_running_mean"), namespace)  # noqa: S102
    return namespace["draw_running_mean"]


def running_mean_line(fig):
    (ax,) = fig.axes
    line = ax.get_lines()[-1]  # the chosen convention's curve is drawn last
    plt.close(fig)
    return np.asarray(line.get_ydata())


def test_explorer_frames_follow_the_convention(draw):
    pytorch_01 = running_mean_line(draw("PyTorch", 0.1))
    assert not np.allclose(pytorch_01, running_mean_line(draw("PyTorch", 0.9)))
    assert not np.allclose(pytorch_01, running_mean_line(draw("Keras/Flax", 0.1)))
    # the two conventions are mirror images: PyTorch's m is Keras's 1 - m
    np.testing.assert_allclose(pytorch_01, running_mean_line(draw("Keras/Flax", 0.9)), atol=1e-12)
    fig = draw("Keras/Flax", 0.99)
    assert "alpha = 0.01" in fig.axes[0].get_title()
    plt.close(fig)
