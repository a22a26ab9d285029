"""normlib.nn's public API is torch 2.13's: signatures, defaults, attributes, class structure."""

from __future__ import annotations

import inspect

import pytest
import torch

import normlib.nn as nl
import normlib.nn.functional as nlF

MODULES = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "GroupNorm",
    "RMSNorm",
    "SyncBatchNorm",
]
FUNCTIONS = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm"]


def _shape(fn):
    """Names, kinds and defaults of ``fn``'s parameters (annotations may be spelled differently)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", MODULES)
def test_constructor_signature(name):
    assert _shape(getattr(nl, name).__init__) == _shape(getattr(torch.nn, name).__init__)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functional_signature(name):
    assert _shape(getattr(nlF, name)) == _shape(getattr(torch.nn.functional, name))


@pytest.mark.parametrize("name", MODULES)
def test_constants_and_attributes(name):
    ours, theirs = getattr(nl, name), getattr(torch.nn, name)
    assert ours.__constants__ == theirs.__constants__
    assert issubclass(ours, torch.nn.Module)
    args = (2, 4) if name == "GroupNorm" else (4,)
    a, b = ours(*args), theirs(*args)
    public = {k for k in vars(b) if not k.startswith("_")}
    assert public <= set(vars(a)), public - set(vars(a))
    assert {k: getattr(a, k) for k in public if k != "training"} == {
        k: getattr(b, k) for k in public if k != "training"
    }


def test_instance_norm_structure():
    from normlib.nn.batch_norm import _NormBase
    from normlib.nn.instance_norm import _InstanceNorm

    for cls in (nl.InstanceNorm1d, nl.InstanceNorm2d, nl.InstanceNorm3d):
        assert cls.__mro__[1:3] == (_InstanceNorm, _NormBase)
        assert {k for k in vars(cls) if not k.startswith("__")} == {
            "_check_input_dim",
            "_get_no_batch_dim",
        }


def test_all_exports():
    assert set(MODULES) <= set(nl.__all__)
    assert set(FUNCTIONS) == set(nlF.__all__)
