"""Compile every kernel variant the launchers ask for to an sm_90 (H100) cubin, without a GPU.

The interpreter runs kernels as NumPy and accepts code the compiler rejects (a constexpr branch
that returns a different type, an unsupported construct). This script runs the launchers on tiny
CPU tensors with ``JITFunction.run`` replaced: instead of launching, each distinct
(kernel, argument types, constexprs, num_warps) is compiled with ``triton.compile`` for
``GPUTarget("cuda", 90, 32)``. Prints one JSON line: the variants compiled and the failures.

Run in a process where triton is imported before normlib.kernels, without TRITON_INTERPRET.
"""

from __future__ import annotations

import json
import sys
import time

import triton  # first: normlib.kernels must not switch the interpreter on
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

import torch  # isort: skip

import normlib.kernels as K  # noqa: E402
from normlib.kernels import _common  # noqa: E402

POINTER = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16",
           torch.float64: "*fp64", torch.int32: "*i32", torch.int64: "*i64"}  # fmt: skip
TARGET = GPUTarget("cuda", 90, 32)
variants: dict[str, tuple] = {}


def capture(self, *args, grid, warmup, **kwargs):
    """Record the variant a launch would compile (ints equal to 1 specialize, as on a GPU)."""
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    bound = dict(zip(self.arg_names, args)) | kwargs
    signature, constexprs = {}, {}
    for p in self.params:
        v = bound[p.name]
        if p.is_constexpr or (type(v) is int and v == 1):
            signature[p.name] = "constexpr"
            constexprs[p.name] = v
        elif isinstance(v, torch.Tensor):
            signature[p.name] = POINTER[v.dtype]
        elif isinstance(v, bool):
            signature[p.name] = "i1"
        elif isinstance(v, int):
            signature[p.name] = "i32" if -(2**31) <= v < 2**31 else "i64"
        elif isinstance(v, float):
            signature[p.name] = "fp32"
        else:
            raise TypeError(f"{self.__name__}: argument {p.name} = {v!r}")
    # tile sizes and warps change numbers, not the code that has to compile: one variant per
    # (kernel, argument types, flags)
    flags = {k: str(v) for k, v in constexprs.items() if not k.startswith("BLOCK")}
    key = json.dumps([self.__name__, signature, flags], sort_keys=True)
    variants.setdefault(key, (self, signature, constexprs, options))


def drive():
    """Call every launcher on shapes that take every code path: all of them in float32 (with the
    default limits, then with tiny tiles and many programs); the main paths in bfloat16 and
    float64 (other accumulation and storage dtypes)."""
    limits = _common.LIMITS
    runs = [(torch.float32, 4096, 16384, 1, True), (torch.float32, 64, 64, 8, True)]
    runs += [(torch.bfloat16, 4096, 16384, 1, False), (torch.float64, 4096, 16384, 1, False)]
    for dtype, tile, row_elems, programs, every_path in runs:
        limits.tile, limits.interpreter_programs = tile, programs
        limits.row_elems = limits.row_elems_bwd = row_elems
        x = torch.randn(6, 300, dtype=dtype)
        w, b = torch.randn(300, dtype=dtype), torch.randn(300, dtype=dtype)
        y, rstd = K.rms_norm_forward(x, (300,), w)
        K.rms_norm_backward(x, x, (300,), w, rstd)
        y, mean, rstd = K.layer_norm_forward(x, (300,), w, b)
        K.layer_norm_backward(x, x, (300,), w, mean, rstd)
        if every_path:
            K.layer_norm_backward(x, x, (300,), None, mean, rstd, need_db=False)
        xg = torch.randn(2, 6, 9, 7, dtype=dtype)
        wg, bg = torch.randn(6, dtype=dtype), torch.randn(6, dtype=dtype)
        y, mean, rstd = K.group_norm_forward(xg, 3, wg, bg)
        K.group_norm_backward(xg, xg, 3, wg, mean, rstd)
        layouts = [xg]
        if every_path:
            layouts += [xg.to(memory_format=torch.channels_last), torch.randn(40, 6, dtype=dtype)]
        for xb in layouts:
            y, mean, var = K.batch_norm_forward(xb, wg, bg)
            K.batch_norm_backward(xb, xb, wg, mean, var)
            K.batch_norm_eval_forward(xb, mean, var, wg, bg)
            K.batch_norm_eval_backward(xb, xb, mean, var, wg)


def main() -> int:
    JITFunction.run = capture
    _common.interpreting = lambda: True  # CPU tensors stand in for GPU ones; nothing is launched
    drive()
    start, failures = time.perf_counter(), []
    for key, (fn, signature, constexprs, options) in variants.items():
        try:
            triton.compile(ASTSource(fn, signature, constexprs), target=TARGET, options=options)
        except Exception as e:  # report every failing variant, not just the first
            failures.append(f"{key}: {type(e).__name__}: {str(e)[:2000]}")
    kernels = sorted({json.loads(k)[0] for k in variants})
    print(json.dumps({"variants": len(variants), "kernels": kernels, "failures": failures,
                      "seconds": round(time.perf_counter() - start, 1)}))  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    assert tl is not None
    sys.exit(main())
