"""The checks of chapter 07 (Variants) accept right answers, reject wrong ones with the specific
hint, and turn a reader's exception into a message."""

import numpy as np
import pytest

from normlib.exercises import variants as ex


def right_group_norm(x, num_groups, eps=1e-5):
    n, c = x.shape[:2]
    v = x.reshape(n, num_groups, c // num_groups, -1)
    mean = v.mean(axis=(2, 3), keepdims=True)
    var = v.var(axis=(2, 3), keepdims=True)
    return ((v - mean) / np.sqrt(var + eps)).reshape(x.shape)


def test_group_norm_right():
    result = ex.check_group_norm(right_group_norm)
    assert result and "✅" in repr(result)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (ex._gn_interleaved, "CONSECUTIVE"),
        (ex._gn_unbiased, "biased variance"),
        (ex._gn_eps_outside, "inside the square root"),
        (ex._gn_with_batch, "batch axis"),
    ],
)
def test_group_norm_known_mistakes_get_their_hint(wrong, hint):
    result = ex.check_group_norm(wrong)
    assert not result
    assert hint in repr(result) and repr(result).startswith("❌")


def test_group_norm_other_wrong_answer_names_the_case():
    result = ex.check_group_norm(lambda x, g, eps=1e-5: right_group_norm(x, g, eps) * 1.01)
    assert not result and "case '" in repr(result) and "largest difference" in repr(result)


def test_group_norm_raising_and_unimplemented_give_messages():
    def raises(x, g, eps=1e-5):
        return x.reshape(7, 7)

    def todo(x, g, eps=1e-5):
        raise NotImplementedError

    assert "raised ValueError" in repr(ex.check_group_norm(raises))
    assert "not implemented yet" in repr(ex.check_group_norm(todo))


def right_rms_norm(x, weight, eps=1e-6):
    return weight * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def test_rms_norm_right_and_mistakes():
    assert ex.check_rms_norm(right_rms_norm)
    centered = ex.check_rms_norm(
        lambda x, w, eps=1e-6: right_rms_norm(x - x.mean(-1, keepdims=True), w, eps)
    )
    assert not centered and "LayerNorm" in repr(centered)
    eps_out = ex.check_rms_norm(
        lambda x, w, eps=1e-6: w * x / (np.sqrt((x * x).mean(-1, keepdims=True)) + eps)
    )
    assert not eps_out and "inside the square root" in repr(eps_out)
    no_weight = ex.check_rms_norm(lambda x, w, eps=1e-6: right_rms_norm(x, 1.0, eps))
    assert not no_weight and "weight" in repr(no_weight)


def test_rms_norm_zero_row_without_eps_is_caught():
    def no_eps(x, w, eps=1e-6):
        with np.errstate(invalid="ignore"):
            return w * x / np.sqrt((x * x).mean(-1, keepdims=True))

    result = ex.check_rms_norm(no_eps)
    assert not result and "NaN" in repr(result)


def right_count(norm, shape, num_groups=1):
    n, c, h, w = shape
    per = {
        "batch_norm": n * h * w,
        "instance_norm": h * w,
        "group_norm": c // num_groups * h * w,
        "layer_norm": c * h * w,
        "rms_norm": c * h * w,
    }[norm]
    return n * c * h * w // per, per


def test_count_statistics():
    assert ex.check_count_statistics(right_count)
    assert ex.count_statistics("batch_norm", (2, 64, 1, 1)) == (64, 2)
    assert ex.count_statistics("group_norm", (32, 64, 14, 14), 32) == (32 * 32, 2 * 14 * 14)

    def bn_without_spatial(norm, shape, num_groups=1):
        if norm == "batch_norm":
            return shape[1], shape[0]
        return right_count(norm, shape, num_groups)

    result = ex.check_count_statistics(bn_without_spatial)
    assert not result and "N·H·W" in repr(result)

    def gn_groups_swapped(norm, shape, num_groups=1):
        if norm == "group_norm":
            n, c, h, w = shape
            return n * (c // num_groups), num_groups * h * w
        return right_count(norm, shape, num_groups)

    result = ex.check_count_statistics(gn_groups_swapped)
    assert not result and "GroupNorm" in repr(result)


RIGHT_INVARIANCES = {
    "batch_norm": set(),
    "instance_norm": {"scale", "shift", "channel_scale", "channel_shift"},
    "group_norm": {"scale", "shift"},
    "layer_norm": {"scale", "shift"},
    "rms_norm": {"scale"},
}


def test_invariances_are_measured_not_typed():
    assert ex.invariances() == RIGHT_INVARIANCES


def test_check_invariances():
    assert ex.check_invariances(RIGHT_INVARIANCES)
    wrong = dict(RIGHT_INVARIANCES, rms_norm={"scale", "shift"})
    result = ex.check_invariances(wrong)
    assert not result and "rms_norm" in repr(result) and "does not undo 'shift'" in repr(result)
    missing = {k: v for k, v in RIGHT_INVARIANCES.items() if k != "layer_norm"}
    assert "no entry for 'layer_norm'" in repr(ex.check_invariances(missing))
    typo = dict(RIGHT_INVARIANCES, batch_norm={"scaling"})
    assert "unknown change" in repr(ex.check_invariances(typo))
    assert "expected a dict" in repr(ex.check_invariances(["batch_norm"]))
    bn_wrong = ex.check_invariances(dict(RIGHT_INVARIANCES, batch_norm={"scale"}))
    assert not bn_wrong and "batch mean" in repr(bn_wrong)
