"""MaskedBatchNorm1d: BatchNorm over the valid positions of padded sequences."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from normlib.nn.masked_batch_norm import MaskedBatchNorm1d, lengths_to_mask

F64 = dict(dtype=torch.float64)
TOL = dict(rtol=1e-10, atol=1e-10)


def pair(c=3, momentum=0.1):
    m = MaskedBatchNorm1d(c, momentum=momentum, **F64)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 1.5, c, **F64))
        m.bias.copy_(torch.linspace(-0.2, 0.3, c, **F64))
    bn = torch.nn.BatchNorm1d(c, momentum=momentum, **F64)
    bn.load_state_dict(m.state_dict())
    return m, bn


def test_lengths_to_mask():
    mask = lengths_to_mask(torch.tensor([3, 1, 0]), 4)
    assert mask.tolist() == [
        [True, True, True, False],
        [True, False, False, False],
        [False, False, False, False],
    ]
    assert lengths_to_mask(torch.tensor([2, 5])).shape == (2, 5)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6)])
def test_all_valid_mask_is_batch_norm(shape):
    torch.manual_seed(0)
    m, bn = pair()
    mask = torch.ones((shape[0],) + shape[2:], dtype=torch.bool)
    for step in range(2):
        x = (torch.randn(shape, **F64) * 2 + step).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y, y2 = m(x, mask), bn(x2)
        assert_close(y, y2, **TOL)
        dy = torch.randn_like(y)
        y.backward(dy)
        y2.backward(dy)
        assert_close(x.grad, x2.grad, **TOL)
        assert_close(m.weight.grad, bn.weight.grad, **TOL)
        assert_close(m.bias.grad, bn.bias.grad, **TOL)
    for k, v in bn.state_dict().items():
        assert_close(m.state_dict()[k], v, rtol=1e-12, atol=1e-12)
    m.eval()
    bn.eval()
    x = torch.randn(shape, **F64)
    assert_close(m(x, mask), bn(x), **TOL)
    assert_close(m(x), bn(x), **TOL)  # no mask: BatchNorm1d


@pytest.mark.parametrize("momentum", [0.1, None])
def test_padded_batch_equals_batch_norm_on_the_valid_values(momentum):
    """Stats, outputs, gradients and running stats as if the padding had never been there."""
    torch.manual_seed(1)
    m, bn = pair(momentum=momentum)
    lengths = torch.tensor([5, 2, 7, 1])
    for step in range(3):
        x = torch.randn(4, 3, 7, **F64) * 1.5 + 2
        mask = lengths_to_mask(lengths, 7)
        x = x.masked_fill(~mask[:, None, :], float("nan") if step == 0 else 0.0)  # pad: NaN or 0
        x.requires_grad_()
        y = m(x, lengths=lengths)
        valid = x.detach().permute(0, 2, 1)[mask]  # (sum(lengths), C): the unpadded values
        valid.requires_grad_()
        y_ref = bn(valid)
        assert_close(y.permute(0, 2, 1)[mask], y_ref, **TOL)
        assert torch.equal(y.permute(0, 2, 1)[~mask], torch.zeros(int((~mask).sum()), 3, **F64))
        dy = torch.randn_like(y)
        y.backward(dy)
        y_ref.backward(dy.permute(0, 2, 1)[mask])
        assert_close(x.grad.permute(0, 2, 1)[mask], valid.grad, **TOL)
        assert torch.equal(
            x.grad.permute(0, 2, 1)[~mask], torch.zeros_like(x.grad.permute(0, 2, 1)[~mask])
        )
        assert_close(m.weight.grad, bn.weight.grad, **TOL)
        m.zero_grad()
        bn.zero_grad()
        lengths = lengths.roll(1)
    for k, v in bn.state_dict().items():
        assert_close(m.state_dict()[k], v, rtol=1e-12, atol=1e-12)
    m.eval()
    bn.eval()
    x = torch.randn(4, 3, 7, **F64)
    mask = lengths_to_mask(lengths, 7)
    assert_close(m(x, mask).permute(0, 2, 1)[mask], bn(x.permute(0, 2, 1)[mask]), **TOL)


def test_padding_biases_plain_batch_norm():
    """The problem the module fixes: zero padding shrinks BatchNorm's mean toward the pad value."""
    torch.manual_seed(2)
    x = torch.randn(8, 1, 10, **F64) + 3.0
    mask = lengths_to_mask(torch.tensor([10, 2, 3, 4, 5, 2, 3, 4]), 10)
    x = x.masked_fill(~mask[:, None, :], 0.0)
    plain, masked = (
        torch.nn.BatchNorm1d(1, momentum=1.0, **F64),
        MaskedBatchNorm1d(1, momentum=1.0, **F64),
    )
    plain(x)
    masked(x, mask)
    assert abs(float(masked.running_mean) - 3.0) < 0.5
    assert float(plain.running_mean) < 2.0


def test_two_dim_input_with_a_sample_mask():
    torch.manual_seed(3)
    m, bn = pair()
    x = torch.randn(6, 3, **F64)
    keep = torch.tensor([True, False, True, True, False, True])
    assert_close(m(x, keep)[keep], bn(x[keep]), **TOL)
    assert torch.equal(m(x, keep)[~keep], torch.zeros(2, 3, **F64))


def test_gradcheck():
    torch.manual_seed(4)
    m, _ = pair()
    x = torch.randn(3, 3, 4, **F64, requires_grad=True)
    mask = lengths_to_mask(torch.tensor([4, 2, 3]), 4)
    assert torch.autograd.gradcheck(lambda t: m(t, mask), (x,))
    assert torch.autograd.gradgradcheck(lambda t: m(t, mask), (x,))


def test_errors():
    m = MaskedBatchNorm1d(3)
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="shape"):
        m(x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="either"):
        m(x, torch.ones(2, 4, dtype=torch.bool), lengths=torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="more than 1 valid"):
        m(x, lengths=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="2D or 3D"):
        m(torch.randn(2, 3, 4, 5))
