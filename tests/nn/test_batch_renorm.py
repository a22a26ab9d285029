"""BatchRenorm1d/2d/3d (Ioffe, 2017) against BatchNorm and the paper's equations."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from normlib.nn.batch_renorm import BatchRenorm1d, BatchRenorm2d, BatchRenorm3d

F64 = dict(dtype=torch.float64)


def make(cls=BatchRenorm2d, c=3, **kw):
    """A renorm layer with non-trivial affine parameters, fixed bounds from step 0 unless told."""
    kw = {"warmup_steps": 0, "r_max_steps": 0, "d_max_steps": 0, **kw}
    m = cls(c, **kw, **F64)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 1.5, c, **F64))
        m.bias.copy_(torch.linspace(-0.2, 0.3, c, **F64))
    return m


def batch_stats(x, eps=1e-5):
    axes = [0] + list(range(2, x.ndim))
    var, mean = torch.var_mean(x, dim=axes, correction=0)
    return mean, torch.sqrt(var + eps)


def view(t, ndim):
    return t.view(1, -1, *([1] * (ndim - 2)))


@pytest.mark.parametrize(
    "cls, shape",
    [
        (BatchRenorm1d, (7, 3)),
        (BatchRenorm1d, (5, 3, 4)),
        (BatchRenorm2d, (4, 3, 5, 2)),
        (BatchRenorm3d, (2, 3, 3, 2, 2)),
    ],
)
def test_r1_d0_is_batch_norm_in_training(cls, shape):
    """r_max = 1, d_max = 0: output, gradients and running mean are BatchNorm's, step after step."""
    torch.manual_seed(0)
    m = make(cls, r_max=1.0, d_max=0.0)
    bn = (
        torch.nn.BatchNorm1d(3, **F64)
        if cls is BatchRenorm1d
        else (
            torch.nn.BatchNorm2d(3, **F64)
            if cls is BatchRenorm2d
            else torch.nn.BatchNorm3d(3, **F64)
        )
    )
    bn.load_state_dict(
        {k: v for k, v in m.state_dict().items() if k != "running_std"}, strict=False
    )
    for step in range(3):
        x = (torch.randn(shape, **F64) * (step + 1) + step).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y, y_bn = m(x), bn(x2)
        assert_close(y, y_bn, rtol=1e-10, atol=1e-10)
        dy = torch.randn_like(y)
        y.backward(dy)
        y_bn.backward(dy)
        assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-10)
        assert_close(m.weight.grad, bn.weight.grad, rtol=1e-10, atol=1e-10)
        assert_close(m.bias.grad, bn.bias.grad, rtol=1e-10, atol=1e-10)
        assert_close(m.running_mean, bn.running_mean, rtol=1e-12, atol=1e-12)
    assert int(m.num_batches_tracked) == 3


def test_unclipped_training_output_is_the_inference_output():
    """Inside the bounds, r and d turn the batch normalization into the running-statistics one."""
    torch.manual_seed(1)
    m = make(r_max=10.0, d_max=10.0)
    x = torch.randn(6, 3, 4, 4, **F64) * 1.3 + 0.4
    mean_b, std_b = batch_stats(x)
    with torch.no_grad():
        m.running_mean.copy_(mean_b + 0.1)
        m.running_std.copy_(std_b * 1.2)
    mu, sigma = m.running_mean.clone(), m.running_std.clone()
    y = m(x)
    expected = view(m.weight, 4) * (x - view(mu, 4)) / view(sigma, 4) + view(m.bias, 4)
    assert_close(y, expected, rtol=1e-10, atol=1e-10)


def test_running_stats_follow_the_paper():
    """mu <- mu + a (mu_B - mu), sigma <- sigma + a (sigma_B - sigma), sigma_B with eps inside."""
    torch.manual_seed(2)
    m = make(momentum=0.3)
    mu, sigma = torch.zeros(3, **F64), torch.ones(3, **F64)
    for _ in range(4):
        x = torch.randn(5, 3, 2, 2, **F64) * 2 + 1
        m(x)
        mean_b, std_b = batch_stats(x, m.eps)
        mu, sigma = mu + 0.3 * (mean_b - mu), sigma + 0.3 * (std_b - sigma)
    assert_close(m.running_mean, mu, rtol=1e-12, atol=1e-12)
    assert_close(m.running_std, sigma, rtol=1e-12, atol=1e-12)


def test_momentum_none_is_a_cumulative_average_of_sigma_b():
    torch.manual_seed(3)
    m = make(momentum=None)
    stds = []
    for _ in range(5):
        x = torch.randn(4, 3, 3, 3, **F64) * torch.rand(1, **F64) * 3
        m(x)
        stds.append(batch_stats(x)[1])
    assert_close(m.running_std, torch.stack(stds).mean(0), rtol=1e-12, atol=1e-12)


def test_clipping():
    """Far from the running statistics r and d stop at their bounds, on both sides."""
    torch.manual_seed(4)
    m = make(r_max=2.0, d_max=0.5)
    x = torch.randn(8, 3, 2, 2, **F64)
    mean_b, std_b = batch_stats(x)
    with torch.no_grad():  # channel 0: sigma_B/sigma tiny, 1: huge, 2: inside; d: -, +, inside
        m.running_std.copy_(std_b * torch.tensor([100.0, 0.01, 1.5], **F64))
        m.running_mean.copy_(mean_b + torch.tensor([1e3, -1e3, 0.0], **F64))
    r = torch.tensor([0.5, 2.0, 1 / 1.5], **F64)
    d = torch.stack([torch.tensor(-0.5, **F64), torch.tensor(0.5, **F64), torch.tensor(0.0, **F64)])
    x_hat = (x - view(mean_b, 4)) / view(std_b, 4)
    expected = view(m.weight, 4) * (x_hat * view(r, 4) + view(d, 4)) + view(m.bias, 4)
    assert_close(m(x), expected, rtol=1e-10, atol=1e-10)


def test_schedule():
    m = BatchRenorm1d(2, r_max=3.0, d_max=5.0, warmup_steps=10, r_max_steps=50, d_max_steps=30)
    assert m.clip_limits(0) == (1.0, 0.0)
    assert m.clip_limits(10) == (1.0, 0.0)
    r, d = m.clip_limits(30)  # halfway for r_max, the end for d_max
    assert r == pytest.approx(2.0) and d == pytest.approx(5.0)
    assert m.clip_limits(20) == (pytest.approx(1.5), pytest.approx(2.5))
    assert m.clip_limits(10_000) == (3.0, 5.0)
    for _ in range(20):  # the schedule follows the step counter
        m(torch.randn(4, 2))
    assert int(m.num_batches_tracked) == 20
    assert m.clip_limits() == m.clip_limits(20)
    with pytest.raises(ValueError):
        BatchRenorm1d(2, r_max=0.5)
    with pytest.raises(ValueError):
        BatchRenorm1d(2, warmup_steps=100, r_max_steps=50)


def test_schedule_clips_during_warmup():
    """During warm-up (r_max = 1, d_max = 0) it is BatchNorm, whatever the running stats."""
    torch.manual_seed(5)
    m = make(warmup_steps=3, r_max_steps=6, d_max_steps=6)
    bn = torch.nn.BatchNorm2d(3, **F64)
    bn.load_state_dict(
        {k: v for k, v in m.state_dict().items() if k != "running_std"}, strict=False
    )
    with torch.no_grad():
        m.running_std.fill_(50.0)
    x = torch.randn(4, 3, 2, 2, **F64) + 3
    assert_close(m(x), bn(x), rtol=1e-10, atol=1e-10)


def test_eval_uses_running_statistics():
    torch.manual_seed(6)
    m = make()
    for _ in range(3):
        m(torch.randn(6, 3, 2, 2, **F64) * 2 + 1)
    m.eval()
    x = torch.randn(2, 3, 2, 2, **F64)
    expected = view(m.weight, 4) * (x - view(m.running_mean, 4)) / view(m.running_std, 4) + view(
        m.bias, 4
    )
    before = m.state_dict()
    assert_close(m(x), expected, rtol=1e-12, atol=1e-12)
    assert_close(m(x[:1]), expected[:1], rtol=1e-12, atol=1e-12)  # per-sample: batch-independent
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])  # eval does not touch the buffers


def test_gradient_treats_r_and_d_as_constants():
    """dL/dx = r * (BatchNorm's dL/dx); dgamma = sum dy (r x_hat + d); dbeta = sum dy."""
    torch.manual_seed(7)
    m = make(r_max=10.0, d_max=10.0)
    x = (torch.randn(5, 3, 3, 2, **F64) * 1.5 + 0.5).requires_grad_()
    mean_b, std_b = batch_stats(x.detach())
    with torch.no_grad():
        m.running_std.copy_(std_b * torch.tensor([0.7, 1.0, 1.4], **F64))
        m.running_mean.copy_(mean_b - 0.3)
    r = std_b / m.running_std
    d = (mean_b - m.running_mean) / m.running_std
    y = m(x)
    dy = torch.randn_like(y)
    y.backward(dy)

    bn = torch.nn.BatchNorm2d(3, track_running_stats=False, **F64)
    with torch.no_grad():
        bn.weight.copy_(m.weight)
    x2 = x.detach().clone().requires_grad_()
    bn(x2).backward(dy)
    assert_close(x.grad, x2.grad * view(r, 4), rtol=1e-10, atol=1e-10)
    x_hat = (x.detach() - view(mean_b, 4)) / view(std_b, 4)
    assert_close(
        m.weight.grad,
        (dy * (x_hat * view(r, 4) + view(d, 4))).sum((0, 2, 3)),
        rtol=1e-10,
        atol=1e-10,
    )
    assert_close(m.bias.grad, dy.sum((0, 2, 3)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls, shape", [(BatchRenorm1d, (4, 3)), (BatchRenorm2d, (3, 3, 2, 2))])
def test_gradcheck(cls, shape):
    """Where r and d are clipped they are constants, so finite differences see the same function."""
    torch.manual_seed(8)
    m = make(cls, momentum=0.0, r_max=2.0, d_max=0.1)  # momentum 0: every call sees the same stats
    with torch.no_grad():
        m.running_std.fill_(1e3)  # r = 1/r_max
        m.running_mean.fill_(1e3)  # d = -d_max
    x = torch.randn(shape, **F64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    assert torch.autograd.gradgradcheck(m, (x,))
    m.eval()
    assert torch.autograd.gradcheck(m, (x,))


def test_state_dict_round_trip():
    torch.manual_seed(9)
    m = make(warmup_steps=2, r_max_steps=10, d_max_steps=10)
    for _ in range(4):
        m(torch.randn(6, 3, 2, 2, **F64) * 3)
    sd = m.state_dict()
    assert set(sd) == {"weight", "bias", "running_mean", "running_std", "num_batches_tracked"}
    fresh = make(warmup_steps=2, r_max_steps=10, d_max_steps=10)
    fresh.load_state_dict(sd)
    assert fresh.clip_limits() == m.clip_limits()
    m.eval()
    fresh.eval()
    x = torch.randn(3, 3, 2, 2, **F64)
    assert_close(fresh(x), m(x), rtol=0, atol=0)
    # a checkpoint from before num_batches_tracked existed (version 1) still loads
    old = type(sd)((k, v) for k, v in sd.items() if k != "num_batches_tracked")
    old._metadata = {"": {"version": 1}}
    fresh = make(warmup_steps=2, r_max_steps=10, d_max_steps=10)
    fresh.load_state_dict(old)
    assert int(fresh.num_batches_tracked) == 0
    assert torch.equal(fresh.running_std, m.running_std)
    fresh.reset_running_stats()
    assert torch.equal(fresh.running_std, torch.ones(3, **F64))


def test_without_running_stats_is_batch_norm():
    torch.manual_seed(10)
    m = BatchRenorm2d(3, track_running_stats=False, **F64)
    bn = torch.nn.BatchNorm2d(3, track_running_stats=False, **F64)
    x = torch.randn(4, 3, 2, 2, **F64)
    assert "running_std" not in m.state_dict()
    assert_close(m(x), bn(x), rtol=1e-10, atol=1e-10)
    m.eval()
    bn.eval()
    assert_close(m(x), bn(x), rtol=1e-10, atol=1e-10)


def test_errors_and_fp32():
    m = BatchRenorm2d(3)
    with pytest.raises(ValueError, match="4D"):
        m(torch.randn(2, 3))
    with pytest.raises(ValueError, match="more than 1 value"):
        BatchRenorm1d(3)(torch.randn(1, 3))
    y = m(torch.randn(4, 3, 2, 2))
    assert y.dtype == torch.float32 and m.running_std.dtype == torch.float32
    assert "r_max=3.0" in repr(m)
