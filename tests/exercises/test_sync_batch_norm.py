"""The checks of chapter 11's exercises accept right answers and explain wrong ones; the chapter's
explorer and single-process simulation of data parallelism do what the chapter says."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from normlib.distributed_demo import PerDeviceBatchNorm2d, draw_statistics_noise
from normlib.exercises.sync_batch_norm import (
    RESNET50_BN_CHANNELS,
    allgather_bytes_received,
    check_global_stats,
    check_resnet50_bytes,
    check_shard_dx,
)

matplotlib.use("Agg")


def global_stats(counts, means, variances):
    n = counts.sum()
    mean = (counts[:, None] * means).sum(0) / n
    return mean, (counts[:, None] * (variances + (means - mean) ** 2)).sum(0) / n


def averaged_variances(counts, means, variances):
    n = counts.sum()
    return (counts[:, None] * means).sum(0) / n, (counts[:, None] * variances).sum(0) / n


def unweighted(counts, means, variances):
    mean = means.mean(0)
    return mean, (variances + (means - mean) ** 2).mean(0)


def back_through_sums(counts, means, variances):
    sums, m2 = counts[:, None] * means, counts[:, None] * variances
    with np.errstate(invalid="ignore"):
        rank_means = sums / counts[:, None]  # 0 / 0 for an empty rank
    n = counts.sum()
    mean = sums.sum(0) / n
    return mean, (m2 + counts[:, None] * (rank_means - mean) ** 2).sum(0) / n


def test_global_stats_check_passes_the_right_answer():
    assert check_global_stats(global_stats)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (averaged_variances, "between-rank term"),
        (unweighted, "weight each rank by its count"),
        (back_through_sums, "never divide by it"),
    ],
)
def test_global_stats_check_explains_wrong_answers(wrong, hint):
    result = check_global_stats(wrong)
    assert not result and result.message.startswith("❌") and hint in result.message


def shard_dx(dy, x_hat, gamma, rstd, sum_dy, sum_dy_xhat, count):
    return gamma * rstd * (dy - sum_dy / count - x_hat * sum_dy_xhat / count)


def test_shard_dx_check():
    assert check_shard_dx(shard_dx)
    local = check_shard_dx(
        lambda dy, x_hat, g, r, s1, s2, n: g * r * (dy - dy.mean(0) - x_hat * (dy * x_hat).mean(0))
    )
    assert not local and "GLOBAL count" in local.message
    no_gamma = check_shard_dx(
        lambda dy, x_hat, g, r, s1, s2, n: shard_dx(dy, x_hat, 1.0, r, s1, s2, n)
    )
    assert not no_gamma and "gamma" in no_gamma.message


def test_checks_answer_a_raising_function_with_a_hint():
    def unfinished(*args):
        raise NotImplementedError

    def buggy(*args):
        return args[99]

    for check in (check_global_stats, check_shard_dx):
        assert "not implemented yet" in check(unfinished).message
        message = check(buggy).message
        assert message.startswith("❌") and "IndexError" in message


def test_resnet50_bytes():
    assert len(RESNET50_BN_CHANNELS) == 53 and sum(RESNET50_BN_CHANNELS) == 26560
    expected = 8 * 7 * (2 * 26560 + 53)
    assert allgather_bytes_received(RESNET50_BN_CHANNELS, 8) == expected
    assert check_resnet50_bytes(expected)
    wrong = check_resnet50_bytes(8 * 8 * (2 * 26560 + 53))  # counted its own packet too
    assert not wrong and "other 7 ranks" in wrong.message


def test_explorer_draw_changes_with_its_parameters():
    import matplotlib.pyplot as plt

    def pixels(**kw):
        fig = draw_statistics_noise(**kw)
        fig.canvas.draw()
        data = np.asarray(fig.canvas.buffer_rgba()).copy()
        title = fig.get_suptitle()
        plt.close(fig)
        return data, title

    a, title_a = pixels(per_device_batch=2, devices=4)
    b, title_b = pixels(per_device_batch=2, devices=8)
    assert "2 image(s)" in title_a and "see 8 images" in title_a and "see 16 images" in title_b
    assert a.shape == b.shape and (a != b).any()


def test_per_device_batch_norm_is_batch_norm_per_shard_with_rank_0_running_stats():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 2, 2)
    sim = PerDeviceBatchNorm2d(3, devices=3)
    with torch.no_grad():
        sim.weight.uniform_()
    y = sim(x)
    refs = [torch.nn.BatchNorm2d(3) for _ in range(3)]
    for r, ref in enumerate(refs):
        ref.load_state_dict(
            {
                **sim.state_dict(),
                "running_mean": torch.zeros(3),
                "running_var": torch.ones(3),
                "num_batches_tracked": torch.tensor(0),
            }
        )
        torch.testing.assert_close(y[2 * r : 2 * r + 2], ref(x[2 * r : 2 * r + 2]))
    torch.testing.assert_close(sim.running_mean, refs[0].running_mean)
    torch.testing.assert_close(sim.running_var, refs[0].running_var)
    with pytest.raises(ValueError, match="equal shards"):
        sim(torch.randn(4, 3, 2, 2))
    sim.eval()
    torch.testing.assert_close(
        sim(x),
        torch.nn.functional.batch_norm(
            x, sim.running_mean, sim.running_var, sim.weight, sim.bias, False
        ),
    )
