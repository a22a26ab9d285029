"""Chapter 12 (Key takeaways): the decision, its figure and explorer, and the exercise checks."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from normlib.exercises import takeaways as ex  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40, metadata={"Software": None})
    return buf.getvalue()


@pytest.mark.parametrize(
    "scenario, answer",
    [
        ({"data": "images", "batch_size": 64}, "batch_norm"),
        ({"data": "images", "batch_size": 16}, "batch_norm"),
        ({"data": "images", "batch_size": 15}, "group_norm"),
        ({"data": "images", "batch_size": 256, "remove_style": True}, "instance_norm"),
        ({"data": "tabular", "batch_size": 2}, "layer_norm"),
        ({"data": "sequences", "batch_size": 512}, "layer_norm"),
        ({"data": "sequences", "batch_size": 1, "llm": True}, "rms_norm"),
    ],
)
def test_decide(scenario, answer):
    got, path = ex.decide(scenario)
    assert got == answer
    assert path[0] == "sequences"
    edges = {(a, b) for a, b, _ in ex.EDGES}
    assert all(step in edges for step in zip(path, path[1:]))  # a path through the flowchart
    assert ex.NODES[path[-1]][3] == "answer"


def test_every_answer_node_is_reachable():
    reached = {
        ex.decide(dict(p, batch_size=b))[1][-1] for p in ex.PRESETS.values() for b in (2, 64)
    }
    answers = {name for name, node in ex.NODES.items() if node[3] == "answer"}
    assert reached == answers


def test_explorer_frames_differ_and_show_the_answer():
    a = ex.preset_figure("CNN on images", 2)
    b = ex.preset_figure("CNN on images", 32)
    c = ex.preset_figure("large language model", 32)
    assert "group_norm" in a.axes[0].get_title() and "batch_norm" in b.axes[0].get_title()
    assert len({_png(a), _png(b), _png(c)}) == 3


def test_decision_figure_without_a_path():
    fig = ex.decision_figure()
    assert len(fig.axes[0].texts) >= len(ex.NODES)


def test_check_choose_norm():
    assert ex.check_choose_norm(lambda s: ex.decide(s)[0])
    always_bn = ex.check_choose_norm(lambda s: "batch_norm")
    assert not always_bn and "Mask R-CNN" in repr(always_bn) and "GroupNorm" in repr(always_bn)

    def ignores_style(s):
        return "batch_norm" if s["batch_size"] >= 16 else "group_norm"

    result = ex.check_choose_norm(ignores_style)
    assert not result and "InstanceNorm" in repr(result)
    assert "not one of" in repr(ex.check_choose_norm(lambda s: "BatchNorm"))
    assert "raised KeyError" in repr(ex.check_choose_norm(lambda s: s["kind"]))
    assert "not implemented" in repr(
        ex.check_choose_norm(lambda s: exec("raise NotImplementedError"))
    )
    assert "expected a function" in repr(ex.check_choose_norm("batch_norm"))


def test_running_mean_after_matches_torch_modules():
    bn = torch.nn.BatchNorm1d(1, momentum=0.1, affine=False, dtype=torch.float64)
    for m in (1.0, 2.0, 4.0):
        bn(torch.tensor([[m - 1.0], [m + 1.0]], dtype=torch.float64))
    assert ex.running_mean_after([1.0, 2.0, 4.0], 0.1) == pytest.approx(float(bn.running_mean[0]))
    assert ex.running_mean_after([1.0, 2.0, 4.0], None) == pytest.approx(7 / 3)
    assert ex.running_mean_after([5.0], 0.9, "keras") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ex.running_mean_after([1.0], 0.1, "flax")


def right_running_mean(batch_means, momentum, convention="torch"):
    running = 0.0
    for k, mean in enumerate(batch_means, start=1):
        if convention == "keras":
            running = momentum * running + (1 - momentum) * mean
        else:
            m = 1 / k if momentum is None else momentum
            running = (1 - m) * running + m * mean
    return running


def test_check_running_mean_after():
    assert ex.check_running_mean_after(right_running_mean)

    def swapped(batch_means, momentum, convention="torch"):
        other = {"torch": "keras", "keras": "torch"}[convention]
        return right_running_mean(batch_means, momentum, other)

    def no_none(batch_means, momentum, convention="torch"):
        return right_running_mean(batch_means, 0.1 if momentum is None else momentum, convention)

    assert "swapped" in repr(ex.check_running_mean_after(swapped))
    assert "cumulative average" in repr(ex.check_running_mean_after(no_none))
    assert "not the last batch" in repr(ex.check_running_mean_after(lambda b, m, c="torch": b[-1]))
    crash = ex.check_running_mean_after(lambda b, m, c="torch": b["first"])
    assert not crash and "raised TypeError" in repr(crash)


RIGHT = {
    "momentum": True,
    "running_var": False,
    "no_grad": False,
    "layer_norm_batch": False,
    "fold": True,
    "naive_variance": False,
    "fourteen_x": False,
    "ics": False,
}


def test_statement_truths_are_measured():
    assert ex.statement_truths() == RIGHT


def test_check_statements():
    assert ex.check_statements(RIGHT)
    result = ex.check_statements(dict(RIGHT, no_grad=True))
    assert not result and "'no_grad'" in repr(result) and "eval()" in repr(result)
    result = ex.check_statements(dict(RIGHT, fourteen_x=True))
    assert not result and "2.3x" in repr(result)
    assert "no answer for 'ics'" in repr(
        ex.check_statements({k: v for k, v in RIGHT.items() if k != "ics"})
    )
    assert "True or False" in repr(ex.check_statements(dict(RIGHT, fold="yes")))
    assert "expected a dict" in repr(ex.check_statements([True]))
