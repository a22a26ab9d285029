"""Auto-checks for the exercises of the chapter "The problem: internal covariate shift"
(book/01_problem.ipynb).

Every expected answer is computed here by a reference function, never typed in; a wrong answer that
matches a known mistake gets that mistake's hint.
"""

from __future__ import annotations

import numpy as np

from ._check import Case, Result, run_cases

__all__ = [
    "check_ics",
    "check_ics_quiz",
    "check_saturated_share",
    "check_smoothness",
    "ics",
    "saturated_share",
    "smoothness",
]


# -------------------------------------------------------------------------------------------------
# Exercise: the share of saturated sigmoid units


def saturated_share(z, p=0.05):
    """Share of the entries of ``z`` whose sigmoid lies outside ``[p, 1 - p]``.

    sigmoid(z) < p  or  sigmoid(z) > 1 - p   <=>   |z| > log((1 - p) / p)
    """
    z = np.asarray(z, dtype=np.float64)
    return float(np.mean(np.abs(z) > np.log((1 - p) / p)))


def _share_upper_tail_only(z, p=0.05):
    return float(np.mean(np.asarray(z) > np.log((1 - p) / p)))


def _share_threshold_p(z, p=0.05):
    return float(np.mean(np.abs(np.asarray(z)) > p))


def _count_not_share(z, p=0.05):
    return float(np.sum(np.abs(np.asarray(z)) > np.log((1 - p) / p)))


def check_saturated_share(fn) -> Result:
    """Check ``fn(z, p=0.05) -> float``: the share of entries of ``z`` with sigmoid(z) not in
    [p, 1 - p]."""
    rng = np.random.default_rng(11)
    z_wide = 4.0 * rng.normal(size=(60, 20))
    z_neg = -np.abs(3.0 * rng.normal(size=500))
    cases = [
        Case(
            "standard normal, 1000 values",
            (rng.normal(size=1000),),
            hint=(
                "a unit saturates when sigmoid(z) < p or sigmoid(z) > 1 - p; "
                "return a share in [0, 1]."
            ),
        ),
        Case(
            "2-D array (60 samples x 20 units), std 4",
            (z_wide,),
            hint=("the share is over every entry of the array, whatever its shape."),
        ),
        Case(
            "negative inputs only",
            (z_neg,),
            hint=("both tails count: a very negative z saturates too (sigmoid near 0)."),
        ),
        Case(
            "p = 0.01",
            (z_wide,),
            {"p": 0.01},
            hint=("use the p you are given: sigmoid(z) < p  <=>  z < -log((1 - p) / p)."),
        ),
    ]
    for case in cases:
        case.expected = saturated_share(*case.args, **case.kwargs)
    mistakes = [
        (
            _share_upper_tail_only,
            "only the upper tail counted: sigmoid(z) < p (z very negative) "
            "saturates too. Hint: compare |z| with log((1 - p) / p).",
        ),
        (
            _share_threshold_p,
            "you compared z itself with p; compare sigmoid(z) with p and 1 - p "
            "(equivalently |z| with log((1 - p) / p)).",
        ),
        (_count_not_share, "you returned a count; divide by the number of entries to get a share."),
    ]
    return run_cases(fn, cases, what="saturated_share", mistakes=mistakes, atol=1e-8)


# -------------------------------------------------------------------------------------------------
# Exercise: effective smoothness along the gradient (Santurkar et al. 2018)


def smoothness(grad, w, etas):
    """Effective beta-smoothness of a loss along its gradient direction at ``w``.

        g = grad(w),   beta_eff = max over eta of ||grad(w - eta g) - g|| / ||eta g||

    For a quadratic loss ``0.5 w^T A w`` this is ``||A g|| / ||g||`` for every eta.
    """
    w = np.asarray(w, dtype=np.float64)
    g = np.asarray(grad(w), dtype=np.float64)
    ratios = [np.linalg.norm(grad(w - eta * g) - g) / np.linalg.norm(eta * g) for eta in etas]
    return float(max(ratios))


def _smooth_no_eta(grad, w, etas):
    w = np.asarray(w, dtype=np.float64)
    g = grad(w)
    return float(max(np.linalg.norm(grad(w - eta * g) - g) / np.linalg.norm(g) for eta in etas))


def _smooth_mean(grad, w, etas):
    w = np.asarray(w, dtype=np.float64)
    g = grad(w)
    return float(
        np.mean([np.linalg.norm(grad(w - eta * g) - g) / np.linalg.norm(eta * g) for eta in etas])
    )


def _smooth_plus(grad, w, etas):
    w = np.asarray(w, dtype=np.float64)
    g = grad(w)
    return float(
        max(np.linalg.norm(grad(w + eta * g) - g) / np.linalg.norm(eta * g) for eta in etas)
    )


def _quadratic(a):
    a = np.asarray(a, dtype=np.float64)
    return lambda w: a @ w


def _quartic(w):
    return np.asarray(w, dtype=np.float64) ** 3  # gradient of sum(w**4) / 4


def _logcosh(w):
    return np.tanh(np.asarray(w, dtype=np.float64))  # gradient of sum(log cosh w)


def check_smoothness(fn) -> Result:
    """Check ``fn(grad, w, etas) -> float``, the effective smoothness along the gradient."""
    rng = np.random.default_rng(12)
    m = rng.normal(size=(5, 5))
    cases = [
        Case(
            "quadratic, A = diag(1, 10)",
            (_quadratic(np.diag([1.0, 10.0])), np.ones(2), [0.01, 0.1]),
            hint="for 0.5 w^T A w the gradient is A w: the answer is ||A g|| / ||g||, any eta.",
        ),
        Case(
            "quadratic, random 5 x 5 A",
            (_quadratic(m @ m.T), rng.normal(size=5), [1e-3, 1e-2]),
            hint="divide the change of the gradient by the length of the step, ||eta g||.",
        ),
        Case(
            "quartic loss sum(w^4)/4",
            (_quartic, np.array([1.0, -2.0, 0.5]), [0.01, 0.05, 0.1]),
            hint="take the maximum over the step sizes eta, not the first or the mean.",
        ),
        Case(
            "log-cosh loss, steps downhill",
            (_logcosh, np.array([0.3, -1.5, 2.0, 0.1]), [0.5, 1.0]),
            hint="step downhill, against the gradient: w - eta g.",
        ),
    ]
    for case in cases:
        case.expected = smoothness(*case.args)
    mistakes = [
        (_smooth_no_eta, "you divided by ||g||; divide by the length of the step, ||eta g||."),
        (_smooth_mean, "you averaged over the step sizes; take the maximum (the worst case)."),
        (_smooth_plus, "you stepped uphill (w + eta g); a gradient step goes to w - eta g."),
    ]
    return run_cases(fn, cases, what="smoothness", mistakes=mistakes, atol=1e-8)


# -------------------------------------------------------------------------------------------------
# Exercise: Santurkar et al.'s measure of internal covariate shift, on a two-layer linear network


def _grads(w1, w2, x, y):
    """``(dW1, dW2)`` of ``L = mean_n 0.5 ||W2 W1 x_n - y_n||^2``; ``x: (N, d)``, ``y: (N, k)``."""
    h = x @ w1.T  # (N, h)
    r = h @ w2.T - y  # (N, k) residuals
    n = x.shape[0]
    dw2 = r.T @ h / n  # (k, h)
    dw1 = (r @ w2).T @ x / n  # (h, d)
    return dw1, dw2


def ics(w1, w2, x, y, lr):
    """Internal covariate shift of the second layer (Santurkar et al. 2018, Definition 2.1).

    G  = dL/dW2 at (W1, W2)
    G' = dL/dW2 at (W1 - lr dL/dW1, W2)      (the first layer has taken its step)
    returns (||G - G'||, cos(G, G'))
    """
    w1, w2, x, y = (np.asarray(a, dtype=np.float64) for a in (w1, w2, x, y))
    dw1, g = _grads(w1, w2, x, y)
    _, g_new = _grads(w1 - lr * dw1, w2, x, y)
    cos = float(np.sum(g * g_new) / (np.linalg.norm(g) * np.linalg.norm(g_new)))
    return float(np.linalg.norm(g - g_new)), cos


def _ics_both_moved(w1, w2, x, y, lr):
    w1, w2, x, y = (np.asarray(a, dtype=np.float64) for a in (w1, w2, x, y))
    dw1, g = _grads(w1, w2, x, y)
    _, g_new = _grads(w1 - lr * dw1, w2 - lr * g, x, y)
    cos = float(np.sum(g * g_new) / (np.linalg.norm(g) * np.linalg.norm(g_new)))
    return float(np.linalg.norm(g - g_new)), cos


def _ics_sum_loss(w1, w2, x, y, lr):
    n = np.asarray(x).shape[0]
    dw1, g = _grads(*(np.asarray(a, dtype=np.float64) for a in (w1, w2, x, y)))
    _, g_new = _grads(
        np.asarray(w1) - lr * n * dw1,
        np.asarray(w2, dtype=np.float64),
        np.asarray(x, dtype=np.float64),
        np.asarray(y, dtype=np.float64),
    )
    g, g_new = n * g, n * g_new
    cos = float(np.sum(g * g_new) / (np.linalg.norm(g) * np.linalg.norm(g_new)))
    return float(np.linalg.norm(g - g_new)), cos


def check_ics(fn) -> Result:
    """Check ``fn(W1, W2, X, Y, lr) -> (l2, cos)`` against :func:`ics`."""
    rng = np.random.default_rng(13)

    def problem(n, d, h, k, scale=1.0):
        x = rng.normal(size=(n, d))
        return (
            scale * rng.normal(size=(h, d)) / np.sqrt(d),
            rng.normal(size=(k, h)) / np.sqrt(h),
            x,
            rng.normal(size=(n, k)),
        )

    p1, p2, p3 = problem(16, 4, 3, 2), problem(32, 8, 6, 3, scale=2.0), problem(7, 5, 5, 1)
    cases = [
        Case(
            "lr = 0: nothing moves",
            (*p1, 0.0),
            hint=(
                "with lr = 0 the first layer does not move: G' = G, so ||G - G'|| = 0 and cos = 1."
            ),
        ),
        Case(
            "16 samples, 4 -> 3 -> 2, lr = 0.1",
            (*p1, 0.1),
            hint=(
                "G' is the gradient for W2 after W1 took its step W1 - lr dL/dW1; W2 itself stays."
            ),
        ),
        Case(
            "32 samples, 8 -> 6 -> 3, lr = 0.5",
            (*p2, 0.5),
            hint=(
                "the loss is the MEAN over samples of 0.5 ||W2 W1 x - y||^2: dL/dW2 = R^T H / N."
            ),
        ),
        Case(
            "7 samples, 5 -> 5 -> 1, lr = 1",
            (*p3, 1.0),
            hint=("return (||G - G'||, cos(G, G')) with the Frobenius norm of the whole matrix."),
        ),
    ]
    for case in cases:
        case.expected = ics(*case.args)
    mistakes = [
        (_ics_both_moved, "G' moves only the EARLIER layer: W1 - lr dL/dW1 with W2 unchanged."),
        (_ics_sum_loss, "the loss is the mean over the N samples, not the sum."),
    ]
    return run_cases(fn, cases, what="ics", mistakes=mistakes, atol=1e-8)


# -------------------------------------------------------------------------------------------------
# Exercise: which observation argues against the ICS explanation?

_QUIZ = {
    "a": "BN networks tolerating larger learning rates is what the ICS story predicts too; "
    "it cannot tell the explanations apart.",
    "b": None,
    "c": "steady percentiles are what Ioffe and Szegedy showed as evidence FOR the ICS story.",
    "d": "insensitivity to the weight scale follows from BN's scale invariance; it says "
    "nothing about whether less ICS is the reason BN helps.",
}


def check_ics_quiz(answer) -> Result:
    """Check the letter chosen in the chapter's quiz (the answer is "b": the noisy-BN run)."""
    key = str(answer).strip().lower().strip("()") if answer is not None else ""
    if key not in _QUIZ:
        return Result(
            False, f"❌ quiz: answer with one of the letters {sorted(_QUIZ)}, got {answer!r}."
        )
    why = _QUIZ[key]
    if why:
        return Result(
            False,
            f"❌ quiz: not ({key}): {why} Hint: which experiment ADDS shift and still trains well?",
        )
    return Result(
        True,
        "✅ quiz: correct. Noisy BN has far more distribution shift than the plain "
        "network and still trains like BN.",
    )
