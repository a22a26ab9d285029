"""normlib.kernels: the Triton kernels of every norm, and normlib's ``"triton"`` backend.

Each file reads like Triton's layer-norm tutorial: the math, then the kernels
(``_<op>_fwd_kernel``/``_<op>_bwd_kernel``), the launchers (``<op>_forward``/``<op>_backward``), the
``torch.autograd.Function`` (``<Op>Function``) and the public op.

=============  ================================  ===============================================
op             file                              kernels
=============  ================================  ===============================================
batch_norm     :mod:`.batch_norm`                split Welford/Chan statistics, fused when the
                                                 channels fill the GPU; NCHW and channels_last
layer_norm     :mod:`.layer_norm`                a row per program (in registers when it fits)
rms_norm       :mod:`.rms_norm`                  as layer_norm, without the mean
group_norm     :mod:`.group_norm`                a (sample, group) row per program;
                                                 InstanceNorm is ``num_groups = C``
=============  ================================  ===============================================

The five ops of the backend contract (:mod:`normlib.backend`) are exported here with the same
signatures as every other backend. Without a CUDA device the kernels run through Triton's
interpreter: this module sets ``TRITON_INTERPRET=1`` when triton has not been imported yet.
"""

from __future__ import annotations

import os
import sys


def _use_interpreter() -> bool:
    """No GPU and triton not yet imported (after the import the flag would come too late)."""
    if "triton" in sys.modules:
        return False
    import torch

    return not torch.cuda.is_available()


if _use_interpreter():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from .batch_norm import (  # noqa: E402 (the interpreter flag must be set before triton loads)
    BatchNormEvalFunction,
    BatchNormFunction,
    batch_norm_backward,
    batch_norm_eval,
    batch_norm_eval_backward,
    batch_norm_eval_forward,
    batch_norm_forward,
    batch_norm_train,
)
from .group_norm import (  # noqa: E402
    GroupNormFunction,
    group_norm,
    group_norm_backward,
    group_norm_forward,
)
from .layer_norm import (  # noqa: E402
    LayerNormFunction,
    layer_norm,
    layer_norm_backward,
    layer_norm_forward,
)
from .rms_norm import RMSNormFunction, rms_norm, rms_norm_backward, rms_norm_forward  # noqa: E402

__all__ = [
    "BatchNormEvalFunction",
    "BatchNormFunction",
    "GroupNormFunction",
    "LayerNormFunction",
    "RMSNormFunction",
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_eval_backward",
    "batch_norm_eval_forward",
    "batch_norm_forward",
    "batch_norm_train",
    "group_norm",
    "group_norm_backward",
    "group_norm_forward",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_forward",
    "rms_norm",
    "rms_norm_backward",
    "rms_norm_forward",
]
