"""The checks of chapter 08 (Implementation details): right answers pass, known mistakes get their
hint, exceptions become messages; the expected answers are measured on real modules."""

import numpy as np
import pytest
import torch

import normlib.nn as nnn
from normlib.exercises import implementation as ex


def right_keys(prefix, affine, track_running_stats):
    names = ["weight", "bias"] if affine else []
    if track_running_stats:
        names += ["running_mean", "running_var", "num_batches_tracked"]
    return [prefix + n for n in names]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_state_dict_keys_match_normlib_modules_too(affine, track):
    bn = nnn.BatchNorm2d(4, affine=affine, track_running_stats=track)
    assert list(bn.state_dict(prefix="m.")) == ex.state_dict_keys("m.", affine, track)


def test_check_state_dict_keys():
    assert ex.check_state_dict_keys(right_keys)

    def no_counter(prefix, affine, track):
        return [k for k in right_keys(prefix, affine, track) if "num_batches" not in k]

    def always_buffers(prefix, affine, track):
        return right_keys(prefix, affine, True)

    def no_prefix(prefix, affine, track):
        return right_keys("", affine, track)

    def buffers_first(prefix, affine, track):
        keys = right_keys(prefix, affine, track)
        return keys[2:] + keys[:2] if affine and track else keys

    assert "num_batches_tracked is a buffer" in repr(ex.check_state_dict_keys(no_counter))
    assert "registered as None" in repr(ex.check_state_dict_keys(always_buffers))
    assert "prefix" in repr(ex.check_state_dict_keys(no_prefix))
    result = ex.check_state_dict_keys(buffers_first)
    assert not result and "parameters (weight, bias) come first" in repr(result)
    assert "not implemented" in repr(
        ex.check_state_dict_keys(lambda p, a, t: exec("raise NotImplementedError"))
    )


def test_check_freeze_bn_right():
    result = ex.check_freeze_bn(ex.reference_freeze_bn)
    assert result and "2 BatchNorm layers" in repr(result)


def _bn_modules(model):
    return [m for m in model.modules() if isinstance(m, (nnn.BatchNorm1d, nnn.BatchNorm2d))]


def test_check_freeze_bn_mistakes():
    def only_eval(model):
        for m in _bn_modules(model):
            m.eval()

    def only_requires_grad(model):
        for m in _bn_modules(model):
            for p in m.parameters():
                p.requires_grad_(False)

    def whole_model(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

    def whole_model_eval(model):
        model.eval()
        for m in _bn_modules(model):
            for p in m.parameters():
                p.requires_grad_(False)

    def all_norms(model):
        for m in model.modules():
            if isinstance(m, (nnn.BatchNorm1d, nnn.BatchNorm2d, nnn.GroupNorm)):
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)

    def copies(model):
        import copy

        return ex.reference_freeze_bn(copy.deepcopy(model))

    def broken(model):
        return model.not_an_attribute

    def todo(model):
        raise NotImplementedError

    assert "requires_grad does not stop it" in repr(ex.check_freeze_bn(only_requires_grad))
    assert "eval() does not touch requires_grad" in repr(ex.check_freeze_bn(only_eval))
    assert "you froze 0.weight too" in repr(ex.check_freeze_bn(whole_model))
    assert "Dropout" in repr(ex.check_freeze_bn(whole_model_eval))
    assert "froze 4.weight" in repr(ex.check_freeze_bn(all_norms))
    assert "in place" in repr(ex.check_freeze_bn(copies))
    assert "raised AttributeError" in repr(ex.check_freeze_bn(broken))
    assert "not implemented" in repr(ex.check_freeze_bn(todo))


def test_running_mean_changes_is_measured():
    assert ex.running_mean_changes() == {"a", "c", "d"}
    # the same semantics as torch's own module (scenario "d" needs train mode under inference_mode)
    bn = torch.nn.BatchNorm1d(3).train()
    with torch.inference_mode():
        bn(torch.randn(16, 3) + 1)
    assert bn.running_mean.abs().sum() > 0


def test_check_running_mean_changes():
    assert ex.check_running_mean_changes({"a", "c", "d"})
    assert ex.check_running_mean_changes("a, c d")
    assert ex.check_running_mean_changes(["A", "c", "d"])
    result = ex.check_running_mean_changes({"c", "d"})
    assert not result and "scenario a" in repr(result) and "no_grad" in repr(result)
    result = ex.check_running_mean_changes({"a", "d"})
    assert not result and "scenario c" in repr(result) and "OPTIMIZER" in repr(result)
    result = ex.check_running_mean_changes({"a", "c", "d", "f"})
    assert not result and "momentum 0" in repr(result)
    assert "unknown scenario" in repr(ex.check_running_mean_changes({"z"}))
    assert "expected a set" in repr(ex.check_running_mean_changes(3))


def right_fold(weight, bias, running_mean, running_var, gamma, beta, eps=1e-5):
    scale = gamma / np.sqrt(running_var + eps)
    return weight * scale[:, None, None, None], (bias - running_mean) * scale + beta


def test_fold_reference_matches_an_eval_bn_after_a_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).double()
    bn = nnn.BatchNorm2d(4, dtype=torch.float64)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    w, b = ex.fold_reference(
        *(
            t.detach().numpy()
            for t in (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias)
        )
    )
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    folded = torch.nn.functional.conv2d(x, torch.tensor(w), torch.tensor(b))
    torch.testing.assert_close(folded, bn(conv(x)))


def test_check_fold_bn():
    assert ex.check_fold_bn(right_fold)

    def no_eps(w, b, m, v, g, beta, eps=1e-5):
        return right_fold(w, b, m, v, g, beta, eps=0.0)

    def std(w, b, m, v, g, beta, eps=1e-5):
        return right_fold(w, b, m, v**2, g, beta, eps)

    def bias_unscaled(w, b, m, v, g, beta, eps=1e-5):
        s = g / np.sqrt(v + eps)
        return w * s[:, None, None, None], b - m * s + beta

    def no_mean(w, b, m, v, g, beta, eps=1e-5):
        return right_fold(w, b, 0 * m, v, g, beta, eps)

    def input_axis(w, b, m, v, g, beta, eps=1e-5):
        s = g / np.sqrt(v + eps)
        return w * s[None, :, None, None], (b - m) * s + beta

    assert "left out eps" in repr(ex.check_fold_bn(no_eps))
    assert "square root" in repr(ex.check_fold_bn(std))
    assert "b is scaled as well" in repr(ex.check_fold_bn(bias_unscaled))
    assert "subtract running_mean" in repr(ex.check_fold_bn(no_mean))
    result = ex.check_fold_bn(input_axis)
    assert not result and "raised ValueError" in repr(result) and "OUTPUT channel" in repr(result)
