"""normlib.nn.BatchNorm1d/2d/3d against torch.nn (the oracle): values, gradients, running
statistics, layouts, dtypes, state_dict, errors."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import normlib.nn as nl

from ._helpers import assert_same_error, check_step, make_pair, memory_format, run_pair

SHAPES = [
    ("BatchNorm1d", (7, 5)),
    ("BatchNorm1d", (4, 5, 3)),
    ("BatchNorm1d", (2, 1)),  # one channel, two values
    ("BatchNorm1d", (1, 3, 2)),  # N = 1 is fine when L > 1
    ("BatchNorm2d", (3, 5, 7, 2)),
    ("BatchNorm2d", (2, 13, 1, 1)),  # spatial 1x1
    ("BatchNorm3d", (2, 3, 2, 3, 5)),
]
CONFIGS = [
    {},
    {"affine": False},
    {"track_running_stats": False},
    {"momentum": None},
    {"momentum": 0.5, "bias": False},
    {"affine": False, "track_running_stats": False, "momentum": None},
]


def _x(shape, dtype=torch.float64, seed=0, scale=2.0, shift=0.5):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + shift).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("name,shape", SHAPES, ids=lambda v: str(v))
def test_matches_torch(name, shape, config, train, dtype):
    def make(ns):
        return getattr(ns, name)(shape[1], **config)

    run_pair(make, _x(shape, dtype), train=train, steps=3, dtype=dtype)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "name,x",
    [
        ("BatchNorm2d", _x((3, 4, 5, 6)).to(memory_format=torch.channels_last)),
        ("BatchNorm3d", _x((2, 4, 3, 2, 5)).to(memory_format=torch.channels_last_3d)),
        ("BatchNorm2d", _x((3, 6, 5, 4)).transpose(1, 3)),  # non-contiguous, 4 channels
        ("BatchNorm2d", _x((3, 4, 10, 6))[:, :, ::2]),  # strided slice
        ("BatchNorm1d", _x((5, 7, 4)).transpose(0, 2)),  # (4, 7, 5)
        ("BatchNorm2d", _x((3, 4, 5, 6)).to(memory_format=torch.channels_last)[..., 1:]),
    ],
    ids=["channels_last", "channels_last_3d", "transposed", "sliced", "1d-transposed", "cl-sliced"],
)
def test_layouts_match_torch(name, x, train):
    """Same values and the same output / input-gradient memory format as torch."""
    run_pair(lambda ns: getattr(ns, name)(x.shape[1]), x, train=train, steps=2)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 3, 0, 5)])
def test_empty_batch(shape, train):
    """No elements: an empty output, zero parameter gradients, running stats untouched, the batch
    still counted, as torch does."""
    reference, ours = run_pair(lambda ns: ns.BatchNorm2d(3), _x(shape), train=train, steps=2)
    y = ours(torch.zeros(shape, requires_grad=True, dtype=torch.float64))
    y.sum().backward()
    assert y.shape == shape
    assert torch.equal(ours.weight.grad, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(ours.bias.grad, torch.zeros(3, dtype=torch.float64))
    assert int(ours.num_batches_tracked) == (3 if train else 0)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
def test_half_input_float_module(half, train):
    """fp16/bf16 input, fp32 module: the output keeps the input dtype, stats stay fp32 and are
    accumulated in fp32 (compared with torch, which does the same)."""
    x = _x((8, 4, 5, 3), half)
    reference, ours = run_pair(lambda ns: ns.BatchNorm2d(4), x, train=train, dtype=torch.float32)
    assert ours(x).dtype == half
    assert ours.running_mean.dtype == torch.float32 and ours.weight.dtype == torch.float32


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
def test_half_module(half):
    """A module converted with .half() / .bfloat16(): everything in the half dtype, counter long."""
    x = _x((8, 4, 5, 3), half)
    reference, ours = run_pair(lambda ns: ns.BatchNorm2d(4), x, train=True, dtype=half)
    assert ours.running_var.dtype == half and ours.num_batches_tracked.dtype == torch.long


def test_fp32_accumulation_with_large_mean():
    """fp32 input with mean 1e4 and std 1: two-pass statistics stay accurate (no E[x^2]-E[x]^2)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 3, 8, 8, generator=gen, dtype=torch.float64) + 1e4).float()
    ours = nl.BatchNorm2d(3)
    y = ours(x)
    expected = torch.nn.functional.batch_norm(x.double(), None, None, training=True)
    torch.testing.assert_close(y.double(), expected, atol=2e-3, rtol=0)
    torch.testing.assert_close(
        ours.running_var,
        torch.full((3,), 0.9) + 0.1 * x.double().var(dim=(0, 2, 3)).float(),
        atol=1e-3,
        rtol=0,
    )


def test_track_running_stats_toggled_after_construction():
    """Switching tracking off after construction: training stops updating the buffers (which stay),
    eval keeps using them; switching it on again resumes, as in torch."""
    reference, ours = make_pair(lambda ns: ns.BatchNorm2d(3))
    x = _x((4, 3, 2, 2))
    for m in (reference, ours):
        m.track_running_stats = False
    for train in (True, False, True):
        reference.train(train)
        ours.train(train)
        check_step(reference, ours, x)
    for m in (reference, ours):
        m.track_running_stats = True
        m.train()
    check_step(reference, ours, x)


def test_untracked_eval_uses_batch_statistics():
    reference, ours = make_pair(lambda ns: ns.BatchNorm1d(3, track_running_stats=False))
    reference.eval()
    ours.eval()
    x = _x((6, 3))
    check_step(reference, ours, x)
    torch.testing.assert_close(ours(x).mean(0), torch.zeros(3, dtype=torch.float64) + ours.bias)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_train_mode_updates_under_no_grad(context):
    """eval() and no_grad/inference_mode are unrelated: train-mode BN updates its stats anyway."""
    reference, ours = make_pair(lambda ns: ns.BatchNorm2d(3, momentum=None), torch.float32)
    x = _x((4, 3, 2, 2), torch.float32)
    with context():
        for _ in range(2):
            torch.testing.assert_close(ours(x), reference(x))
    assert int(ours.num_batches_tracked) == 2
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)


def test_momentum_weighs_the_new_batch():
    """running = (1 - m) * running + m * batch, running_var unbiased (n / (n - 1))."""
    m = nl.BatchNorm1d(2, momentum=0.25).double()
    x = _x((5, 2))
    m(x)
    torch.testing.assert_close(m.running_mean, 0.25 * x.mean(0))
    torch.testing.assert_close(m.running_var, 0.75 + 0.25 * x.var(0, correction=1))


def test_momentum_none_is_cumulative_average():
    m = nl.BatchNorm1d(2, momentum=None).double()
    batches = [_x((4, 2), seed=s) for s in range(3)]
    for b in batches:
        m(b)
    torch.testing.assert_close(m.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    assert int(m.num_batches_tracked) == 3


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_nan_and_inf_propagate_like_torch(train):
    x = _x((4, 3, 2, 2))
    x[0, 0, 0, 0] = float("nan")
    x[1, 1, 1, 1] = float("inf")
    run_pair(lambda ns: ns.BatchNorm2d(3), x, train=train, steps=1)


# ------------------------------------------------------------------------------------- state & API


@pytest.mark.parametrize(
    "make",
    [
        lambda ns: ns.BatchNorm2d(3),
        lambda ns: ns.BatchNorm1d(4, affine=False),
        lambda ns: ns.BatchNorm3d(2, track_running_stats=False),
        lambda ns: ns.BatchNorm2d(3, bias=False, momentum=None),
    ],
)
def test_state_dict_round_trip(make):
    """Same keys, order, dtypes and version; loads both ways with strict=True."""
    reference, ours = make_pair(make)
    sd_ref, sd_ours = reference.state_dict(), ours.state_dict()
    assert list(sd_ours) == list(sd_ref)
    assert [v.dtype for v in sd_ours.values()] == [v.dtype for v in sd_ref.values()]
    assert sd_ours._metadata[""]["version"] == sd_ref._metadata[""]["version"] == 2
    for key in sd_ref:
        torch.testing.assert_close(sd_ours[key], sd_ref[key])
    fresh_torch = make(torch.nn)
    fresh_torch.load_state_dict(sd_ours, strict=True)
    assert all(
        torch.equal(a, b) for a, b in zip(fresh_torch.state_dict().values(), sd_ref.values())
    )
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in reference.named_buffers()]


@pytest.mark.parametrize("version", [None, 1])
def test_loads_old_checkpoint_without_num_batches_tracked(version):
    """Checkpoints before version 2 have no num_batches_tracked: strict loading still works and
    keeps the module's counter, exactly as torch."""
    for ns in (torch.nn, nl):
        source = torch.nn.BatchNorm2d(3)
        source(torch.randn(4, 3, 2, 2))
        sd = source.state_dict()
        del sd["num_batches_tracked"]
        if version is None:
            del sd._metadata[""]["version"]
        else:
            sd._metadata[""]["version"] = version
        target = ns.BatchNorm2d(3)
        target.num_batches_tracked.fill_(7)
        target.load_state_dict(sd, strict=True)
        assert int(target.num_batches_tracked) == 7
        torch.testing.assert_close(target.running_mean, source.running_mean)
    # version 2 without the key is an error in both
    sd = torch.nn.BatchNorm2d(3).state_dict()
    del sd["num_batches_tracked"]
    assert_same_error(lambda nn, F: nn.BatchNorm2d(3).load_state_dict(sd, strict=True))


def test_nested_prefix_state_dict():
    """Inside a Sequential (prefixed keys) both ways."""
    ref_net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    our_net = torch.nn.Sequential(torch.nn.Linear(3, 3), nl.BatchNorm1d(3))
    our_net.load_state_dict(ref_net.state_dict(), strict=True)
    ref_net.load_state_dict(our_net.state_dict(), strict=True)
    assert list(our_net.state_dict()) == list(ref_net.state_dict())


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((3,), {}),
        ((4,), {"eps": 1e-3, "momentum": None}),
        ((2,), {"affine": False, "bias": False}),
        ((5,), {"track_running_stats": False, "momentum": 0.01}),
    ],
)
@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
def test_repr(name, args, kwargs):
    assert repr(getattr(nl, name)(*args, **kwargs)) == repr(
        getattr(torch.nn, name)(*args, **kwargs)
    )


def test_pickle_and_deepcopy():
    m = make_pair(lambda ns: ns.BatchNorm2d(3))[1]
    m(_x((4, 3, 2, 2)))
    m.eval()
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert type(clone) is nl.BatchNorm2d
        for a, b in zip(m.state_dict().values(), clone.state_dict().values()):
            assert torch.equal(a, b)
        x = _x((4, 3, 2, 2), seed=1)
        torch.testing.assert_close(clone(x), m(x))


def test_device_and_dtype_kwargs():
    m = nl.BatchNorm2d(3, device="cpu", dtype=torch.float64)
    t = torch.nn.BatchNorm2d(3, device="cpu", dtype=torch.float64)
    for (na, a), (nb, b) in zip(m.state_dict().items(), t.state_dict().items()):
        assert na == nb and a.dtype == b.dtype and a.device == b.device
    meta = nl.BatchNorm1d(3, device="meta")
    assert meta.weight.is_meta and meta.num_batches_tracked.is_meta


def test_reset_parameters_and_running_stats():
    reference, ours = make_pair(lambda ns: ns.BatchNorm2d(3))
    for m in (reference, ours):
        m(_x((4, 3, 2, 2)))
        m.reset_running_stats()
    for a, b in zip(reference.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(a, b)
    ours.reset_parameters()
    assert torch.equal(ours.weight, torch.ones(3, dtype=torch.float64))
    assert torch.equal(ours.bias, torch.zeros(3, dtype=torch.float64))
    assert int(ours.num_batches_tracked) == 0


def test_class_structure_is_torchs():
    """_NormBase -> _BatchNorm -> BatchNorm*d; the subclasses only override _check_input_dim."""
    from normlib.nn.batch_norm import _BatchNorm, _NormBase

    for cls in (nl.BatchNorm1d, nl.BatchNorm2d, nl.BatchNorm3d):
        assert cls.__mro__[1:3] == (_BatchNorm, _NormBase)
        own = {k for k in vars(cls) if not k.startswith("__")}
        assert own == {"_check_input_dim"}
    assert _NormBase._version == 2


def test_fuse_conv_bn_eval():
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    conv = torch.nn.Conv2d(3, 4, 3).double().eval()
    bn = make_pair(lambda ns: ns.BatchNorm2d(4))[1].eval()
    x = _x((2, 3, 6, 6))
    fused = fuse_conv_bn_eval(conv, bn)
    torch.testing.assert_close(fused(x), bn(conv(x)))


# ------------------------------------------------------------------------------------------ errors

ERRORS = {
    "one value per channel": lambda nn, F: nn.BatchNorm2d(3)(torch.randn(1, 3, 1, 1)),
    "one value per channel 1d": lambda nn, F: nn.BatchNorm1d(3)(torch.randn(1, 3)),
    "one value in eval is fine": lambda nn, F: nn.BatchNorm1d(3).eval()(torch.randn(1, 3)),
    "rank 2d": lambda nn, F: nn.BatchNorm2d(3)(torch.randn(2, 3, 4)),
    "rank 1d": lambda nn, F: nn.BatchNorm1d(3)(torch.randn(2, 3, 4, 5)),
    "rank 3d": lambda nn, F: nn.BatchNorm3d(3)(torch.randn(2, 3, 4, 5)),
    "channels": lambda nn, F: nn.BatchNorm2d(4)(torch.randn(2, 3, 4, 5)),
    "channels eval": lambda nn, F: nn.BatchNorm2d(4).eval()(torch.randn(2, 3, 4, 5)),
    "channels untracked": lambda nn, F: nn.BatchNorm2d(4, track_running_stats=False)(
        torch.randn(2, 3, 4, 5)
    ),
    "channels nothing to check": lambda nn, F: nn.BatchNorm2d(
        4, affine=False, track_running_stats=False
    )(torch.randn(2, 3, 4, 5)),
    "channels empty batch": lambda nn, F: nn.BatchNorm2d(4)(torch.randn(0, 3, 4, 5)),
    "integer input": lambda nn, F: nn.BatchNorm2d(3)(torch.ones(2, 3, 4, 5, dtype=torch.long)),
    "int32 input eval": lambda nn, F: nn.BatchNorm1d(3).eval()(torch.ones(2, 3, dtype=torch.int)),
    "complex input": lambda nn, F: nn.BatchNorm1d(3, affine=False)(torch.ones(2, 3).cfloat()),
    "fp64 input fp32 module": lambda nn, F: nn.BatchNorm2d(3)(torch.randn(2, 3, 4, 5).double()),
    "fp64 input fp32 module eval": lambda nn, F: nn.BatchNorm2d(3).eval()(
        torch.randn(2, 3, 4, 5).double()
    ),
    "fp32 input fp64 module": lambda nn, F: nn.BatchNorm2d(3).double()(torch.randn(2, 3, 4, 5)),
    "fp32 input bf16 module": lambda nn, F: nn.BatchNorm2d(3).bfloat16()(torch.randn(2, 3, 4, 5)),
    "fp16 input bf16 module": lambda nn, F: nn.BatchNorm2d(3).bfloat16()(
        torch.randn(2, 3, 4, 5).half()
    ),
    "F eps zero": lambda nn, F: F.batch_norm(torch.randn(2, 3), None, None, training=True, eps=0.0),
    "F eps negative": lambda nn, F: F.batch_norm(
        torch.randn(2, 3), torch.zeros(3), torch.ones(3), eps=-1.0
    ),
    "F eval without running": lambda nn, F: F.batch_norm(torch.randn(2, 3), None, None),
    "F eval without running_var": lambda nn, F: F.batch_norm(
        torch.randn(2, 3), torch.zeros(3), None
    ),
    "F only running_mean": lambda nn, F: F.batch_norm(
        torch.randn(2, 3), torch.zeros(3), None, training=True
    ),
    "F only running_var": lambda nn, F: F.batch_norm(
        torch.randn(2, 3), None, torch.ones(3), training=True
    ),
    "F weight size": lambda nn, F: F.batch_norm(
        torch.randn(2, 3), None, None, torch.ones(4), training=True
    ),
    "F bias size": lambda nn, F: F.batch_norm(
        torch.randn(2, 3), None, None, torch.ones(3), torch.ones(4), training=True
    ),
    "F running_var size": lambda nn, F: F.batch_norm(
        torch.randn(2, 3), torch.zeros(3), torch.ones(4), training=True
    ),
    "F 1d input": lambda nn, F: F.batch_norm(torch.randn(5), None, None, training=True),
    "F mixed running dtype": lambda nn, F: F.batch_norm(
        torch.randn(2, 3), torch.zeros(3).double(), torch.ones(3).double(), training=True
    ),
    "F mixed after weight": lambda nn, F: F.batch_norm(
        torch.randn(2, 3),
        torch.zeros(3).double(),
        torch.ones(3).double(),
        torch.ones(3),
        training=True,
    ),
    "F half weight fp32 bias": lambda nn, F: F.batch_norm(
        torch.randn(2, 3).half(), None, None, torch.ones(3).half(), torch.ones(3), training=True
    ),
    "F half fp32 running eval": lambda nn, F: F.batch_norm(
        torch.randn(2, 3).half(), torch.zeros(3), torch.ones(3)
    ),
    "F integer and wrong channels": lambda nn, F: F.batch_norm(
        torch.ones(2, 3, dtype=torch.long), torch.zeros(4), torch.ones(4), training=True
    ),
    "F integer and only running_mean": lambda nn, F: F.batch_norm(
        torch.ones(2, 3, dtype=torch.long), torch.zeros(3), None, training=True
    ),
    "F mixed and only running_mean": lambda nn, F: F.batch_norm(
        torch.ones(2, 3).double(), torch.zeros(3), None, training=True
    ),
    "F empty with only running_mean": lambda nn, F: F.batch_norm(
        torch.ones(0, 3), torch.zeros(3), None, training=True
    ),
    "F empty integer": lambda nn, F: F.batch_norm(torch.ones(0, 3, dtype=torch.long), None, None),
    "F zero channels": lambda nn, F: F.batch_norm(
        torch.ones(2, 0), None, None, torch.ones(0), training=True
    ),
    "F 2d weight with C elements": lambda nn, F: F.batch_norm(
        torch.randn(2, 4), None, None, torch.ones(2, 2), training=True
    ),
}


@pytest.mark.parametrize("call", ERRORS.values(), ids=ERRORS.keys())
def test_errors_match_torch(call):
    assert_same_error(call)


def test_rank_error_message():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        nl.BatchNorm2d(3)(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nl.BatchNorm1d(3)(torch.randn(1, 3))


def test_memory_format_helper_matches_torch_ambiguous_cases():
    """N111 / 1C1W tensors: our suggest_memory_format agrees with torch's output layout."""
    for x in (
        torch.randn(4, 1, 1, 1),
        torch.randn(1, 3, 1, 5).transpose(1, 3),
        torch.randn(2, 3, 1, 1).to(memory_format=torch.channels_last),
        torch.randn(2, 1, 4, 5).to(memory_format=torch.channels_last),
    ):
        y_ref = torch.nn.BatchNorm2d(x.shape[1]).eval()(x)
        y = nl.BatchNorm2d(x.shape[1]).eval()(x)
        # strides of size-1 dims do not matter
        assert [s for s, n in zip(y.stride(), y.shape) if n > 1] == [
            s for s, n in zip(y_ref.stride(), y_ref.shape) if n > 1
        ], x.stride()
        assert memory_format(y) == memory_format(y_ref)
