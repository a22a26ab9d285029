"""The checks of book/09_numerics.ipynb pass right answers and give a hint for wrong ones."""

import numpy as np
import pytest

from normlib.exercises import numerics as ex
from normlib.ref import moments


def _welford_sums(x):  # the cancelling one-pass sums, shaped like Welford's output
    mean, var = moments.naive_var(x)
    return x.dtype.type(x.size), mean, var * x.size


def _raises(*args):
    raise ValueError("boom")


def test_welford_right_and_wrong():
    assert ex.check_welford(moments.welford)
    wrong = ex.check_welford(lambda x: (len(x), x.mean(), x.var()))
    assert not wrong and "M2 is the sum of squared deviations" in repr(wrong)
    cancel = ex.check_welford(_welford_sums)
    assert not cancel and "mean 1e4" in repr(cancel)


def test_chan_merge_right_and_wrong():
    assert ex.check_chan_merge(moments.chan_merge)
    no_between = ex.check_chan_merge(lambda a, b: (a[0] + b[0], (a[1] + b[1]) / 2, a[2] + b[2]))
    assert not no_between and "case" in repr(no_between)

    def divides_by_part(a, b):
        n = a[0] + b[0]
        delta = b[1] - a[1]
        return n, a[1] + delta / (1 + a[0] / b[0]), a[2] + b[2] + delta**2 * a[0] * b[0] / n

    assert not ex.check_chan_merge(divides_by_part)


def test_stable_var_right_and_wrong():
    assert ex.check_stable_var(lambda x: moments.two_pass_var(x)[1])
    assert ex.check_stable_var(lambda x: moments.shifted_var(x)[1])
    wrong = ex.check_stable_var(lambda x: moments.naive_var(x)[1])
    assert not wrong and "E[x^2] - E[x]^2" in repr(wrong)


@pytest.mark.parametrize(
    "check, right, wrong",
    [
        (ex.check_constant_channel_grad, 1 / np.sqrt(1e-5), 1e5),
        (ex.check_fp16_threshold, float(np.sqrt(65504)), 65504.0),
    ],
)
def test_value_checks(check, right, wrong):
    assert check(right)
    assert not check(wrong)
    assert "no answer yet" in repr(check(None))


def test_a_raising_answer_gives_a_hint_not_an_exception():
    result = ex.check_welford(_raises)
    assert not result and "ValueError: boom" in repr(result) and "Hint" in repr(result)
