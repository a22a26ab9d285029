"""The checks of chapter 01 (The problem) accept right answers, reject wrong ones with the specific
hint, and turn a reader's exception into a message."""

import numpy as np
import pytest

from normlib.exercises import problem as ex


def is_pass(result):
    return bool(result) and repr(result).startswith("✅")


def is_fail(result, *words):
    text = repr(result)
    return not result and text.startswith("❌") and all(w in text for w in words)


def todo(*args, **kwargs):
    raise NotImplementedError


# --- saturated_share ----------


def right_share(z, p=0.05):
    s = 1 / (1 + np.exp(-np.asarray(z, dtype=np.float64)))
    return float(np.mean((s < p) | (s > 1 - p)))


def test_saturated_share_right():
    assert is_pass(ex.check_saturated_share(right_share))
    assert is_pass(ex.check_saturated_share(ex.saturated_share))


@pytest.mark.parametrize(
    "wrong, words",
    [
        (ex._share_upper_tail_only, ["upper tail"]),
        (ex._share_threshold_p, ["compared z itself"]),
        (ex._count_not_share, ["count"]),
        (lambda z, p=0.05: right_share(z), ["case 'p = 0.01'"]),  # ignores p
    ],
)
def test_saturated_share_wrong(wrong, words):
    assert is_fail(ex.check_saturated_share(wrong), *words)


def test_saturated_share_raising_and_todo():
    assert is_fail(ex.check_saturated_share(todo), "not implemented")
    assert is_fail(ex.check_saturated_share(lambda z, p=0.05: z.reshape(7, 7)), "raised ValueError")


def test_saturated_share_reference_values():
    assert ex.saturated_share(np.array([-3.0, -2.0, 0.0, 2.0, 3.0])) == pytest.approx(0.4)
    assert ex.saturated_share(np.array([4.0, 5.0]), p=0.001) == 0.0


# --- smoothness ----------


def test_smoothness_right():
    def right(grad, w, etas):
        g = grad(w)
        return max(np.linalg.norm(grad(w - e * g) - g) / (e * np.linalg.norm(g)) for e in etas)

    assert is_pass(ex.check_smoothness(right))


def test_smoothness_quadratic_is_norm_ratio():
    a = np.diag([1.0, 10.0])
    w = np.ones(2)
    g = a @ w
    expected = np.linalg.norm(a @ g) / np.linalg.norm(g)
    assert ex.smoothness(lambda v: a @ v, w, [0.01, 0.3]) == pytest.approx(expected)


@pytest.mark.parametrize(
    "wrong, words",
    [
        (ex._smooth_no_eta, ["||eta g||"]),
        (ex._smooth_mean, ["maximum"]),
        (ex._smooth_plus, ["uphill"]),
    ],
)
def test_smoothness_wrong(wrong, words):
    assert is_fail(ex.check_smoothness(wrong), *words)


def test_smoothness_todo_and_raising():
    assert is_fail(ex.check_smoothness(todo), "not implemented")
    assert is_fail(ex.check_smoothness(lambda grad, w, etas: 1 / 0), "ZeroDivisionError")


# --- ics ----------


def test_ics_right_and_lr_zero():
    def right(w1, w2, x, y, lr):
        def grads(w1):
            h = x @ w1.T
            r = h @ w2.T - y
            return (r @ w2).T @ x / len(x), r.T @ h / len(x)

        d1, g = grads(w1)
        _, g2 = grads(w1 - lr * d1)
        return np.linalg.norm(g - g2), np.sum(g * g2) / np.linalg.norm(g) / np.linalg.norm(g2)

    assert is_pass(ex.check_ics(right))
    rng = np.random.default_rng(0)
    l2, cos = ex.ics(
        rng.normal(size=(3, 4)),
        rng.normal(size=(2, 3)),
        rng.normal(size=(5, 4)),
        rng.normal(size=(5, 2)),
        0.0,
    )
    assert l2 == 0.0 and cos == pytest.approx(1.0)


def test_ics_matches_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w1, w2, x, y = (rng.normal(size=s) for s in ((3, 4), (2, 3), (9, 4), (9, 2)))
    t1, t2 = torch.tensor(w1, requires_grad=True), torch.tensor(w2, requires_grad=True)
    xt, yt = torch.tensor(x), torch.tensor(y)
    loss = 0.5 * ((xt @ t1.T @ t2.T - yt) ** 2).sum(1).mean()
    d1, g = torch.autograd.grad(loss, (t1, t2))
    t1b = (t1 - 0.1 * d1).detach()
    g2 = torch.autograd.grad(0.5 * ((xt @ t1b.T @ t2.T - yt) ** 2).sum(1).mean(), t2)[0]
    l2, cos = ex.ics(w1, w2, x, y, 0.1)
    assert l2 == pytest.approx(float((g - g2).norm()), rel=1e-10)
    assert cos == pytest.approx(
        float(torch.nn.functional.cosine_similarity(g.flatten(), g2.flatten(), dim=0)), rel=1e-10
    )


@pytest.mark.parametrize(
    "wrong, words",
    [
        (ex._ics_both_moved, ["EARLIER layer"]),
        (ex._ics_sum_loss, ["mean over the N samples"]),
        (lambda *a: ex.ics(*a)[::-1], ["case '"]),  # (cos, l2): swapped
    ],
)
def test_ics_wrong(wrong, words):
    assert is_fail(ex.check_ics(wrong), *words)


def test_ics_todo():
    assert is_fail(ex.check_ics(todo), "not implemented")


# --- quiz ----------


def test_quiz():
    assert is_pass(ex.check_ics_quiz("b"))
    assert is_pass(ex.check_ics_quiz(" (B) "))
    for wrong in ("a", "c", "d"):
        assert is_fail(ex.check_ics_quiz(wrong), f"not ({wrong})")
    assert is_fail(ex.check_ics_quiz(None), "one of the letters")
    assert is_fail(ex.check_ics_quiz("e"), "one of the letters")
