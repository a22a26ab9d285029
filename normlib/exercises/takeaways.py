"""The "which normalization should I use?" decision, its figure, and the auto-checks of the chapter
"Key takeaways" (book/12_takeaways.ipynb).

The decision is written once, in :func:`decide`; the flowchart (:data:`NODES`, :data:`EDGES`),
the explorer that highlights a path through it, and the check of the reader's ``choose_norm`` all
use it.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import nn as nnn
from ._check import Case, Result, run_cases

NORM_NAMES = (
    "batch_norm",
    "layer_norm",
    "instance_norm",
    "group_norm",
    "rms_norm",
    "sync_batch_norm",
)

# The flowchart: {name: (x, y, text, kind)} in axes coordinates, and (src, dst, label) edges.
NODES = {
    "sequences": (
        0.5,
        0.93,
        "Sequences of varying length?\n(text, audio, RNN, Transformer)",
        "question",
    ),
    "llm": (0.2, 0.66, "A large language model?\n(cost per token matters)", "question"),
    "rms_norm": (0.08, 0.36, "RMSNorm", "answer"),
    "layer_norm_seq": (0.32, 0.36, "LayerNorm\n(pre-LN)", "answer"),
    "style": (0.6, 0.72, "Remove each image's\ncontrast and style?", "question"),
    "instance_norm": (0.89, 0.72, "InstanceNorm", "answer"),
    "batch": (0.6, 0.5, "≥ 16 samples per device,\ni.i.d. batches?", "question"),
    "batch_norm": (0.89, 0.5, "BatchNorm\n(fold at inference)", "answer"),
    "images": (0.6, 0.28, "Images\n(convolutions)?", "question"),
    "group_norm": (0.88, 0.28, "GroupNorm\n(or SyncBatchNorm)", "answer"),
    "layer_norm_tab": (0.6, 0.07, "LayerNorm", "answer"),
}
EDGES = [
    ("sequences", "llm", "yes"),
    ("sequences", "style", "no"),
    ("llm", "rms_norm", "yes"),
    ("llm", "layer_norm_seq", "no"),
    ("style", "instance_norm", "yes"),
    ("style", "batch", "no"),
    ("batch", "batch_norm", "yes"),
    ("batch", "images", "no"),
    ("images", "group_norm", "yes"),
    ("images", "layer_norm_tab", "no"),
]
_ANSWER = {
    "rms_norm": "rms_norm",
    "layer_norm_seq": "layer_norm",
    "instance_norm": "instance_norm",
    "batch_norm": "batch_norm",
    "group_norm": "group_norm",
    "layer_norm_tab": "layer_norm",
}
MIN_BATCH = 16  # per device; below it BatchNorm's error rises (Wu & He 2018, Figure 1)


def decide(scenario: dict) -> tuple[str, tuple[str, ...]]:
    """``(norm, path)``: the flowchart's answer for ``scenario`` and the nodes on the way.

    ``scenario``: ``data`` ("images", "sequences" or "tabular"), ``batch_size`` (per device),
    ``remove_style`` (bool, default False), ``llm`` (bool, default False).
    """
    path = ["sequences"]
    if scenario["data"] == "sequences":
        path.append("llm")
        path.append("rms_norm" if scenario.get("llm") else "layer_norm_seq")
    else:
        path.append("style")
        if scenario.get("remove_style"):
            path.append("instance_norm")
        else:
            path.append("batch")
            if scenario["batch_size"] >= MIN_BATCH:
                path.append("batch_norm")
            else:
                path.append("images")
                path.append("group_norm" if scenario["data"] == "images" else "layer_norm_tab")
    return _ANSWER[path[-1]], tuple(path)


def decision_figure(scenario: dict | None = None, *, title: str | None = None, figsize=(8, 4.6)):
    """The flowchart, with ``scenario``'s path highlighted (none if None). Returns the figure."""
    import matplotlib.pyplot as plt

    from ..figures import draw_flowchart

    fig, ax = plt.subplots(figsize=figsize)
    path = decide(scenario)[1] if scenario is not None else ()
    draw_flowchart(ax, NODES, EDGES, highlight=path)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


# Named scenarios of the explorer: the batch size comes from its own slider.
PRESETS = {
    "CNN on images": {"data": "images"},
    "style transfer": {"data": "images", "remove_style": True},
    "MLP on tabular data": {"data": "tabular"},
    "Transformer / RNN": {"data": "sequences"},
    "large language model": {"data": "sequences", "llm": True},
}


def preset_figure(model: str, batch_size: int):
    """The explorer's frame: preset ``model`` with ``batch_size`` samples per device."""
    scenario = dict(PRESETS[model], batch_size=batch_size)
    answer = decide(scenario)[0]
    return decision_figure(
        scenario, title=f"{model}, {batch_size} per device → {answer}", figsize=(7, 4)
    )


# -------------------------------------------------------------------------------------------------
# Exercise: choose_norm

CHOICE_CASES = [
    # (description, scenario, accepted answers, hint)
    (
        "ResNet-50 on ImageNet, 64 images per GPU",
        {"data": "images", "batch_size": 64},
        {"batch_norm", "sync_batch_norm"},
        "with plenty of samples per device BatchNorm is the best of the norms in CNNs "
        "(chapter 07).",
    ),
    (
        "Mask R-CNN, 2 high-resolution images per GPU",
        {"data": "images", "batch_size": 2},
        {"group_norm", "sync_batch_norm"},
        "BatchNorm's statistics from 2 images are noisy and differ from the running ones: use a "
        "batch-independent norm (GroupNorm), or share statistics across GPUs (SyncBatchNorm).",
    ),
    (
        "fast neural style transfer network",
        {"data": "images", "batch_size": 4, "remove_style": True},
        {"instance_norm"},
        "the stylized output should not depend on the content image's contrast: InstanceNorm "
        "removes each image's per-channel mean and variance.",
    ),
    (
        "7-billion-parameter decoder-only language model",
        {"data": "sequences", "batch_size": 8, "llm": True},
        {"rms_norm", "layer_norm"},
        "sequences of varying length, generated token by token: normalize each token on its own "
        "(RMSNorm in most recent LLMs, LayerNorm in older ones).",
    ),
    (
        "LSTM language model on sentences of varying length, 64 per batch",
        {"data": "sequences", "batch_size": 64},
        {"layer_norm", "rms_norm"},
        "even with 64 sequences, statistics per time step over the batch do not fit sequences of "
        "varying length and generation: LayerNorm normalizes each step's features on their own.",
    ),
    (
        "MLP on tabular data, batches of 512",
        {"data": "tabular", "batch_size": 512},
        {"batch_norm", "layer_norm"},
        "large i.i.d. batches: BatchNorm works (LayerNorm too).",
    ),
    (
        "MLP on tabular data trained online, 1 example at a time",
        {"data": "tabular", "batch_size": 1},
        {"layer_norm", "rms_norm"},
        "with one example per step there are no batch statistics at all (N·1 = 1 value per "
        "feature): normalize over the features of each example.",
    ),
    (
        "diffusion model U-Net, 4 images per GPU",
        {"data": "images", "batch_size": 4},
        {"group_norm", "sync_batch_norm"},
        "small batches of images: GroupNorm, as in most diffusion U-Nets.",
    ),
    (
        "image-to-image GAN generator (e.g. photo to painting), batch of 1",
        {"data": "images", "batch_size": 1, "remove_style": True},
        {"instance_norm"},
        "per-image style and contrast: InstanceNorm (with batch 1, BatchNorm in training mode "
        "would compute InstanceNorm's statistics anyway, and then use different ones in eval).",
    ),
]


def check_choose_norm(fn) -> Result:
    """``fn(scenario) -> norm name``; each case accepts every defensible answer."""
    what = "choose_norm"
    if not callable(fn):
        return Result(False, f"❌ {what}: expected a function, got {type(fn).__name__}.")
    for description, scenario, accepted, hint in CHOICE_CASES:
        assert decide(scenario)[0] in accepted, description  # the flowchart agrees with the cases
        try:
            got = fn(dict(scenario))
        except NotImplementedError:
            return Result(
                False,
                f"❌ {what}: not implemented yet (the function raises "
                "NotImplementedError). Replace the `raise` with your code.",
            )
        except Exception as exc:  # the reader's bug: report it
            return Result(
                False,
                f"❌ {what}, case '{description}': your function raised "
                f"{type(exc).__name__}: {exc}. Hint: {hint}",
            )
        if got not in NORM_NAMES:
            return Result(
                False, f"❌ {what}, case '{description}': {got!r} is not one of {list(NORM_NAMES)}."
            )
        if got not in accepted:
            return Result(
                False, f"❌ {what}, case '{description}': you chose {got!r}. Hint: {hint}"
            )
    return Result(True, f"✅ {what}: a defensible choice in all {len(CHOICE_CASES)} scenarios.")


# -------------------------------------------------------------------------------------------------
# Exercise: the running mean after a few batches, in PyTorch's and Keras's conventions


def _batch_with_mean(mean: float) -> torch.Tensor:
    return torch.tensor([[mean - 1.0], [mean + 1.0]], dtype=torch.float64)  # (2, 1): mean exactly


def running_mean_after(batch_means, momentum, convention="torch") -> float:
    """The running mean after batches with ``batch_means``, from 0, measured on a normlib BatchNorm.

    ``convention="torch"``: ``momentum`` weighs the new batch (None: cumulative average).
    ``convention="keras"``: ``momentum`` weighs the old value, i.e. torch's ``1 - momentum``.
    """
    if convention not in ("torch", "keras"):
        raise ValueError(f"convention must be 'torch' or 'keras', got {convention!r}")
    torch_momentum = momentum if convention == "torch" else 1.0 - momentum
    bn = nnn.BatchNorm1d(1, momentum=torch_momentum, affine=False, dtype=torch.float64).train()
    for mean in batch_means:
        bn(_batch_with_mean(float(mean)))
    return float(bn.running_mean[0])


def _keras_read_as_torch(batch_means, momentum, convention="torch"):
    return running_mean_after(batch_means, momentum, "torch" if convention == "keras" else "keras")


def _no_cumulative(batch_means, momentum, convention="torch"):
    return running_mean_after(batch_means, 0.1 if momentum is None else momentum, convention)


def _last_batch(batch_means, momentum, convention="torch"):
    return float(batch_means[-1])


def check_running_mean_after(fn) -> Result:
    """``fn(batch_means, momentum, convention) -> running mean`` (starting from 0)."""

    means = [1.0, 2.0, 4.0]
    cases = [
        Case("torch, momentum 0.1, one batch of mean 1", ([1.0], 0.1, "torch")),
        Case("torch, momentum 0.1, three batches", (means, 0.1, "torch")),
        Case("keras, momentum 0.99, three batches", (means, 0.99, "keras")),
        Case("keras, momentum 0.9, one batch of mean 5", ([5.0], 0.9, "keras")),
        Case("torch, momentum None, three batches", (means, None, "torch")),
        Case("torch, momentum 1.0", (means, 1.0, "torch")),
    ]
    for case in cases:
        case.expected = running_mean_after(*case.args)
        case.hint = (
            "PyTorch: running = (1 - m) * running + m * batch_mean; Keras: running = "
            "m * running + (1 - m) * batch_mean; PyTorch with m=None: the plain average "
            "of every batch mean so far."
        )
    mistakes = [
        (
            _keras_read_as_torch,
            "the two conventions are swapped: PyTorch's momentum weighs the NEW "
            "batch (0.1 keeps 90% of the old value), Keras's weighs the OLD value "
            "(0.99 keeps 99%).",
        ),
        (
            _no_cumulative,
            "momentum=None in PyTorch means a cumulative average: after k batches the "
            "running mean is the plain mean of the k batch means.",
        ),
        (
            _last_batch,
            "the running mean is an exponential moving average of the batch means, not "
            "the last batch's mean.",
        ),
    ]
    return run_cases(fn, cases, what="running_mean_after", mistakes=mistakes, rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------------------------------------------
# Exercise: true or false


def _momentum_keeps_90_percent() -> bool:
    return abs(running_mean_after([1.0], 0.1) - 0.1) < 1e-12  # 90% of the old 0, 10% of the new 1


def _running_var_is_biased() -> bool:
    bn = nnn.BatchNorm1d(1, momentum=1.0, dtype=torch.float64).train()
    x = _batch_with_mean(0.0)  # values -1, 1: biased variance 1, unbiased 2
    bn(x)
    return abs(float(bn.running_var[0]) - 1.0) < 1e-12


def _no_grad_stops_updates() -> bool:
    bn = nnn.BatchNorm1d(1, dtype=torch.float64).train()
    with torch.no_grad():
        bn(_batch_with_mean(3.0))
    return float(bn.running_mean[0]) == 0.0


def _layer_norm_depends_on_batch() -> bool:
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ln = nnn.LayerNorm(8, dtype=torch.float64)
    return not torch.allclose(ln(x)[:1], ln(x[:1]))


def _fold_is_exact() -> bool:
    from ..nn.fusion import fuse_conv_bn_eval

    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3).double().eval()
    bn = nnn.BatchNorm2d(3, dtype=torch.float64).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(3, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(3, generator=g, dtype=torch.float64) + 0.5)
    x = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return torch.allclose(fuse_conv_bn_eval(conv, bn)(x), bn(conv(x)), atol=1e-12)


def _naive_variance_is_fine() -> bool:
    x = (np.random.default_rng(0).normal(size=4096) + 1e4).astype(np.float32)
    naive = np.mean(x * x) - np.mean(x) ** 2  # float32 throughout
    return abs(float(naive) - float(np.var(x.astype(np.float64)))) < 0.01


STATEMENTS = {
    "momentum": (
        "With PyTorch's default momentum=0.1, each training step keeps 90% of the old "
        "running mean.",
        _momentum_keeps_90_percent,
        "PyTorch's momentum weighs the new batch: running = 0.9 * running + 0.1 * batch "
        "(chapter 03).",
    ),
    "running_var": (
        "running_var stores the same (biased) variance that training-mode "
        "normalization divides by.",
        _running_var_is_biased,
        "normalization uses the biased variance, the running variance stores the "
        "unbiased one, n / (n - 1) times larger (chapters 02 and 03).",
    ),
    "no_grad": (
        "Inside torch.no_grad(), a BatchNorm in training mode does not update its running "
        "statistics.",
        _no_grad_stops_updates,
        "no_grad is about autograd; only eval() (or track_running_stats=False) stops the "
        "updates (chapter 08).",
    ),
    "layer_norm_batch": (
        "LayerNorm's output for one sample depends on the other samples in the batch.",
        _layer_norm_depends_on_batch,
        "LayerNorm's statistics are per sample (chapter 07).",
    ),
    "fold": (
        "In eval mode, a BatchNorm after a convolution can be folded into the convolution exactly.",
        _fold_is_exact,
        "eval-mode BatchNorm is a fixed affine map per channel (chapter 08).",
    ),
    "naive_variance": (
        "E[x²] − E[x]² in float32 is accurate enough for activations with mean "
        "1e4 and standard deviation 1.",
        _naive_variance_is_fine,
        "the two terms agree in about 8 digits, float32 keeps about 7: the "
        "difference is rounding noise (chapter 09).",
    ),
    "fourteen_x": (
        "BatchNorm alone made Inception reach its accuracy in 14 times fewer steps.",
        lambda: False,
        "14x needed BN-x5: BatchNorm plus a 5x learning rate, no dropout and more "
        "changes; BatchNorm alone needed about 2.3x fewer steps (Ioffe & Szegedy 2015, "
        "Figure 3; chapter 05).",
    ),
    "ics": (
        "Santurkar et al. (2018) showed that BatchNorm works because it reduces internal "
        "covariate shift.",
        lambda: False,
        "they showed the opposite: injecting covariate shift after BatchNorm hardly hurts; "
        "BatchNorm makes the loss landscape smoother (chapter 05).",
    ),
}


def statement_truths() -> dict[str, bool]:
    """``{key: truth}`` of :data:`STATEMENTS`: measured where a computation can decide it; the last
    two are statements about papers (see their hints for the sources)."""
    return {key: bool(truth()) for key, (_, truth, _) in STATEMENTS.items()}


def check_statements(answers) -> Result:
    """``answers``: ``{key: True/False}`` for every key of :data:`STATEMENTS`."""
    what = "true or false"
    if not isinstance(answers, dict):
        return Result(
            False,
            f"❌ {what}: expected a dict {{key: True or False}}, got {type(answers).__name__}.",
        )
    truths = statement_truths()
    for key, (text, _, hint) in STATEMENTS.items():
        if key not in answers or answers[key] is None:
            return Result(False, f"❌ {what}: no answer for {key!r} ({text})")
        if not isinstance(answers[key], (bool, np.bool_)):
            return Result(False, f"❌ {what}, {key!r}: answer True or False, got {answers[key]!r}.")
        if bool(answers[key]) != truths[key]:
            return Result(False, f'❌ {what}, {key!r}: "{text}" is {truths[key]}. Hint: {hint}')
    return Result(True, f"✅ {what}: all {len(STATEMENTS)} right.")


__all__ = [
    "CHOICE_CASES",
    "EDGES",
    "NODES",
    "PRESETS",
    "STATEMENTS",
    "check_choose_norm",
    "check_running_mean_after",
    "check_statements",
    "decide",
    "decision_figure",
    "preset_figure",
    "running_mean_after",
    "statement_truths",
]
