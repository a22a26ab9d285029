"""The checks of chapter 02 (The algorithm) accept right answers, reject wrong ones with the
specific hint, and turn a reader's exception into a message."""

import numpy as np
import pytest

from normlib import ref
from normlib.exercises import algorithm as ex


def is_pass(result):
    return bool(result) and repr(result).startswith("✅")


def is_fail(result, *words):
    text = repr(result)
    return not result and text.startswith("❌") and all(w in text for w in words)


def todo(*args, **kwargs):
    raise NotImplementedError


def axes_of(x):
    return (0,) + tuple(range(2, x.ndim))


def view_of(x):
    return (1, -1) + (1,) * (x.ndim - 2)


# --- forward ----------


def right_forward(x, gamma, beta, eps=1e-5):
    axes = axes_of(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return gamma.reshape(view_of(x)) * (x - mean) / np.sqrt(var + eps) + beta.reshape(view_of(x))


def test_forward_right_float64_and_in_input_precision():
    assert is_pass(ex.check_batch_norm_forward(right_forward))
    assert is_pass(
        ex.check_batch_norm_forward(
            lambda x, g, b, eps=1e-5: ref.batch_norm_forward(x, g, b, eps)[0]
        )
    )


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"ddof": 1}, ["unbiased variance"]),
        ({"eps_outside": True}, ["outside the square root"]),
        ({"axes": (0,)}, ["per (channel, position)"]),
    ],
)
def test_forward_known_mistakes(kwargs, words):
    def wrong(x, g, b, eps=1e-5):
        return ex._fwd_with(x, g, b, eps, **kwargs)

    assert is_fail(ex.check_batch_norm_forward(wrong), *words)


def test_forward_layer_norm_mistake():
    def wrong(x, g, b, eps=1e-5):
        return ex._fwd_with(x, g, b, eps, axes=tuple(range(1, x.ndim)))

    assert is_fail(ex.check_batch_norm_forward(wrong), "LayerNorm")


def test_forward_ignores_gamma_beta():
    def wrong(x, g, b, eps=1e-5):
        return right_forward(x, np.ones_like(g), np.zeros_like(b), eps)

    assert is_fail(ex.check_batch_norm_forward(wrong), "random gamma and beta", "gamma * x_hat")


def test_forward_one_pass_float32_is_caught():
    def naive(x, g, b, eps=1e-5):
        axes = axes_of(x)
        mean = x.mean(axis=axes, keepdims=True)
        var = (x * x).mean(axis=axes, keepdims=True) - mean * mean
        var = np.maximum(var, 0)  # hide the NaN: the values are still wrong
        return g.reshape(view_of(x)) * (x - mean) / np.sqrt(var + eps) + b.reshape(view_of(x))

    assert is_fail(ex.check_batch_norm_forward(naive), "float32", "two passes")


def test_forward_todo_and_raising():
    assert is_fail(ex.check_batch_norm_forward(todo), "not implemented")
    assert is_fail(
        ex.check_batch_norm_forward(lambda x, g, b, eps=1e-5: x.mean(axis=5)),
        "raised",
        "case '(N, C) = (8, 3), gamma = 1, beta = 0'",
    )


# --- backward ----------


def right_backward(dy, x, gamma, eps=1e-5):
    axes = axes_of(x)
    mean = x.mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    x_hat = (x - mean) * rstd
    dx_hat = dy * gamma.reshape(view_of(x))
    dx = rstd * (
        dx_hat
        - dx_hat.mean(axis=axes, keepdims=True)
        - x_hat * (dx_hat * x_hat).mean(axis=axes, keepdims=True)
    )
    return dx, (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


def test_backward_right():
    assert is_pass(ex.check_batch_norm_backward(right_backward))


def test_backward_reference_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, dy, gamma = rng.normal(size=(4, 3, 5, 5)), rng.normal(size=(4, 3, 5, 5)), rng.normal(size=3)
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.batch_norm(xt, None, None, gt, bt, training=True).backward(torch.tensor(dy))
    for got, want in zip(ex._bwd(dy, x, gamma), (xt.grad, gt.grad, bt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"mean_term": False, "var_term": False}, ["constants"]),
        ({"mean_term": False}, ["through the mean"]),
        ({"var_term": False}, ["through the variance"]),
        ({"use_gamma": False}, ["dy * gamma"]),
    ],
)
def test_backward_known_mistakes(kwargs, words):
    def wrong(dy, x, gamma, eps=1e-5):
        return ex._bwd_with(dy, x, gamma, eps, **kwargs)

    assert is_fail(ex.check_batch_norm_backward(wrong), *words)


def test_backward_wrong_param_grads_and_todo():
    def dgamma_mean(dy, x, gamma, eps=1e-5):
        dx, dgamma, dbeta = right_backward(dy, x, gamma, eps)
        return dx, dgamma / x.shape[0], dbeta

    assert is_fail(ex.check_batch_norm_backward(dgamma_mean), "item 1")
    assert is_fail(ex.check_batch_norm_backward(todo), "not implemented")


# --- axes and counts ----------


def test_axes_right_in_any_form():
    assert is_pass(ex.check_bn_axes(lambda n: (0, *range(2, n))))
    assert is_pass(ex.check_bn_axes(lambda n: list(range(n - 1, 1, -1)) + [-n]))


@pytest.mark.parametrize(
    "wrong, words",
    [
        (lambda n: (0,), ["positions"]),
        (lambda n: tuple(range(1, n)), ["LayerNorm"]),
        (lambda n: tuple(range(2, n)), ["InstanceNorm"]),
        (lambda n: (1,), ["case 'ndim = 2'"]),
    ],
)
def test_axes_wrong(wrong, words):
    assert is_fail(ex.check_bn_axes(wrong), *words)


def test_axes_todo_and_none():
    assert is_fail(ex.check_bn_axes(todo), "not implemented")
    assert is_fail(ex.check_bn_axes(lambda n: None), "raised TypeError")


def test_stat_count():
    assert is_pass(ex.check_stat_count(32 * 28 * 28))
    assert is_pass(ex.check_stat_count(2 * 5, shape=(2, 3, 5)))
    assert is_fail(ex.check_stat_count(32), "batch size alone")
    assert is_fail(ex.check_stat_count(64 * 28 * 28), "per sample")
    assert is_fail(ex.check_stat_count(7), "expected 25088")
    assert is_fail(ex.check_stat_count(None), "None")


# --- recovery ----------


def test_recovery_right():
    def right(x, eps):
        axes = axes_of(x)
        return np.sqrt(x.var(axis=axes) + eps), x.mean(axis=axes)

    assert is_pass(ex.check_recovery(right))


def test_recovery_std_and_unbiased_are_caught():
    def std(x, eps):
        return np.sqrt(x.var(axis=axes_of(x))), x.mean(axis=axes_of(x))

    def unbiased(x, eps):
        return np.sqrt(x.var(axis=axes_of(x), ddof=1) + eps), x.mean(axis=axes_of(x))

    assert is_fail(ex.check_recovery(std), "gamma = std", "sqrt(var + eps)")
    assert is_fail(ex.check_recovery(unbiased), "biased variance")


def test_recovery_wrong_axes_and_todo():
    def per_position(x, eps):
        return np.sqrt(x.var(axis=0) + eps), x.mean(axis=0)  # (C, H, W): not per channel

    assert is_fail(ex.check_recovery(per_position), "(N, C, H, W)")
    assert is_fail(ex.check_recovery(todo), "not implemented")
