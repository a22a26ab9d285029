"""The checks of chapter 06 (Limitations) accept right answers, reject wrong ones with the specific
hint, and turn a reader's exception into a message; the chapter's explorer draws distinct frames."""

from __future__ import annotations

import numpy as np
import pytest
from _notebook import assert_reports_exceptions, notebook_cell_namespace
from _notebook import hint as _hint
from _notebook import ok as _ok

from normlib.exercises import limitations as ex


def test_batch_var_std():
    def right(var, b):
        return var * (2 * (b - 1)) ** 0.5 / b

    assert _ok(ex.check_batch_var_std(right))
    assert _hint(ex.check_batch_var_std(ex._var_std_unbiased), "unbiased")
    assert _hint(ex.check_batch_var_std(ex._var_std_squared), "square root")
    assert _hint(ex.check_batch_var_std(ex._var_std_of_mean), "batch *mean*")
    assert _hint(ex.check_batch_var_std(lambda v, b: right(v, b) * 1.1), "case '")


def test_masked_mean_var():
    def right(x, mask):
        m = mask[:, None, :]
        n = m.sum()
        mean = (x * m).sum((0, 2)) / n
        return mean, (((x - mean[:, None]) * m) ** 2).sum((0, 2)) / n

    assert _ok(ex.check_masked_mean_var(right))
    assert _hint(ex.check_masked_mean_var(ex._mv_with_padding), "include the padding")
    assert _hint(ex.check_masked_mean_var(ex._mv_unbiased), "biased variance")
    assert _hint(ex.check_masked_mean_var(ex._mv_mean_of_means), "per-sequence means")


def test_renorm_r_d():
    def right(mb, sb, mu, sigma, r_max, d_max):
        return np.clip(sb / sigma, 1 / r_max, r_max), np.clip((mb - mu) / sigma, -d_max, d_max)

    assert _ok(ex.check_renorm_r_d(right))
    assert _hint(ex.check_renorm_r_d(ex._rd_no_clip), "not clipped")
    assert _hint(ex.check_renorm_r_d(ex._rd_inverted), "upside down")
    assert _hint(ex.check_renorm_r_d(ex._rd_d_over_batch_std), "*running* std")
    assert _hint(ex.check_renorm_r_d(ex._rd_sign), "wrong sign")


def test_ghost_batch_norm():
    import torch

    def right(x, vbs, eps=1e-5):  # torch's BatchNorm on each ghost batch
        t = torch.as_tensor(x)
        return torch.cat(
            [
                torch.nn.functional.batch_norm(c, None, None, training=True, eps=eps)
                for c in t.split(vbs)
            ]
        ).numpy()

    assert _ok(ex.check_ghost_batch_norm(right))
    assert _hint(ex.check_ghost_batch_norm(ex._gbn_whole_batch), "whole batch")
    assert _hint(ex.check_ghost_batch_norm(ex._gbn_unbiased), "biased variance")
    assert _hint(ex.check_ghost_batch_norm(ex._gbn_interleaved), "CONSECUTIVE")

    def drops_rest(x, vbs, eps=1e-5):
        n = x.shape[0] // vbs * vbs
        return ex.ghost_batch_norm(x[:n], vbs, eps) if n else ex.ghost_batch_norm(x, vbs, eps)

    assert _hint(ex.check_ghost_batch_norm(drops_rest), "remainder")


@pytest.mark.parametrize(
    "check",
    [
        ex.check_batch_var_std,
        ex.check_masked_mean_var,
        ex.check_renorm_r_d,
        ex.check_ghost_batch_norm,
    ],
)
def test_raising_and_unimplemented_give_messages(check):
    assert_reports_exceptions(check)


def test_explorer_frames_differ():
    ns = notebook_cell_namespace("06_limitations.ipynb", "def draw_batch_noise(")
    draw = ns["draw_batch_noise"]
    import matplotlib.pyplot as plt

    pngs = []
    for b in (2, 64):
        fig = draw(batch_size=b, feature="digits")
        assert len(fig.axes) == 3 and all(ax.get_title() for ax in fig.axes)
        pngs.append(_png(fig))
        plt.close(fig)
    assert pngs[0] != pngs[1]


def _png(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()
