"""Auto-checks for the exercises of the chapter "Numerics" (book/09_numerics.ipynb)."""

from __future__ import annotations

import numpy as np

from ..ref.moments import chan_merge, welford
from ._check import Case, Result, check_value, run_cases


def _truth(x):
    """``(count, mean, M2)`` of ``x`` in float64: the answer a float32 algorithm should approach."""
    x64 = np.asarray(x, dtype=np.float64)
    return float(x64.size), float(x64.mean()), float(((x64 - x64.mean()) ** 2).sum())


def _offset_data(n=2048, offset=1e4, seed=0):
    return (np.random.default_rng(seed).normal(size=n) + offset).astype(np.float32)


def check_welford(fn) -> Result:
    """``fn(x) -> (count, mean, M2)`` must follow Welford's one-pass update."""
    cases = [
        Case(
            "five numbers",
            (np.array([1.0, 2.0, 3.0, 4.0, 5.0]),),
            expected=(5.0, 3.0, 10.0),
            hint="M2 is the sum of squared deviations (10 here), not the variance (2).",
        ),
        Case(
            "one element",
            (np.array([7.0]),),
            expected=(1.0, 7.0, 0.0),
            hint="after one element, count = 1, mean = that element, M2 = 0.",
        ),
        Case(
            "float32 with mean 1e4",
            (_offset_data(),),
            expected=_truth(_offset_data()),
            rtol=1e-3,
            atol=1e-3,
            hint="update with delta = x - mean BEFORE and (x - new mean) AFTER the mean update: "
            "M2 += delta * (x - mean). Summing x and x*x instead cancels catastrophically.",
        ),
    ]
    return run_cases(fn, cases, what="welford")


def check_chan_merge(fn) -> Result:
    """``fn(a, b)`` merges two ``(count, mean, M2)`` triples."""
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=50)
    a, b = welford(x[:20]), welford(x[20:])
    cases = [
        Case(
            "two halves",
            (a, b),
            expected=tuple(map(float, chan_merge(a, b))),
            hint="M2 = M2_a + M2_b + delta^2 * n_a * n_b / n, with delta = mean_b - mean_a.",
        ),
        Case(
            "equal means",
            ((4.0, 1.0, 2.0), (4.0, 1.0, 6.0)),
            expected=(8.0, 1.0, 8.0),
            hint="with equal means the M2s simply add.",
        ),
        Case(
            "an empty part",
            ((0.0, 0.0, 0.0), (3.0, 2.0, 5.0)),
            expected=(3.0, 2.0, 5.0),
            hint="a rank or block with no samples (count 0) must leave the other part unchanged; "
            "avoid dividing by n_a or n_b alone.",
        ),
        Case(
            "an empty second part",
            ((3.0, 2.0, 5.0), (0.0, 0.0, 0.0)),
            expected=(3.0, 2.0, 5.0),
            hint="merging with an empty part (count 0) must return the other part unchanged.",
        ),
        Case(
            "different sizes",
            ((1.0, 10.0, 0.0), (3.0, 2.0, 8.0)),
            expected=(4.0, 4.0, 56.0),
            hint="the merged mean is the count-weighted mean: mean_a + delta * n_b / n.",
        ),
    ]
    return run_cases(fn, cases, what="chan_merge", rtol=1e-9, atol=1e-9)


def check_stable_var(fn) -> Result:
    """``fn(x) -> var`` (biased) must be accurate in float32 even when ``|mean| >> std``."""
    cases = []
    for name, offset in [("mean 0", 0.0), ("mean 1e3", 1e3), ("mean 1e4", 1e4), ("mean 1e5", 1e5)]:
        x = _offset_data(4096, offset, seed=2)
        _, _, m2 = _truth(x)
        cases.append(
            Case(
                name,
                (x,),
                expected=m2 / x.size,
                rtol=1e-2,
                atol=1e-3,
                hint="E[x^2] - E[x]^2 loses every digit when the mean is large; subtract the "
                "mean (or a shift close to it) before squaring.",
            )
        )
    return run_cases(fn, cases, what="stable_var")


def check_constant_channel_grad(answer) -> Result:
    """The factor multiplying the centered upstream gradient of a constant channel (eps=1e-5)."""
    return check_value(
        answer,
        1.0 / np.sqrt(1e-5),
        what="constant-channel gradient scale",
        rtol=1e-3,
        hint="var = 0, so rstd = 1/sqrt(0 + eps); x_hat = 0 kills the last term of dx.",
    )


def check_fp16_threshold(answer) -> Result:
    """The largest ``|x|`` whose square is still finite in float16."""
    return check_value(
        answer,
        float(np.sqrt(np.finfo(np.float16).max)),
        what="float16 square threshold",
        rtol=1e-3,
        hint="float16's largest finite value is np.finfo(np.float16).max = 65504.",
    )
