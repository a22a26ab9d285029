"""Every kernel variant the launchers use compiles for an H100 (sm_90), checked without a GPU.

The other kernel tests run through Triton's interpreter, which executes code the compiler would
reject; this test compiles the real thing (``aot_compile.py``, in a fresh process so triton is
not in interpreter mode).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).with_name("aot_compile.py")


def test_every_kernel_variant_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # the default; setting it silences triton's notice
    out = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.stdout.strip(), out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["failures"] == [], "\n".join(report["failures"])
    assert out.returncode == 0
    kernels = {
        f"_{op}_{kind}_kernel"
        for op in ("batch_norm", "layer_norm", "rms_norm", "group_norm")
        for kind in ("fwd", "bwd")
    }
    assert kernels <= set(report["kernels"])
    assert report["variants"] >= 40
