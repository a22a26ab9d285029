"""The GPU benchmark's non-timing parts, on a CPU: the bytes model, the configurations, the JSON
schema, the plot and the summary, and the whole pipeline with a fake timer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from normlib.bench import gpu

ROW_KEYS = ["op", "pass", "shape", "dtype", "layout", "normlib_ms", "eager_ms", "compile_ms",
            "min_bytes", "normlib_gbps", "pct_copy"]  # fmt: skip


@pytest.mark.parametrize(
    "op,pass_,shape,dtype,expected",
    [
        # x and y (2 * 120 * 4) + weight and bias (2 * 3 * 4) + float32 mean and var (2 * 3 * 4)
        ("batch_norm", "fwd", (2, 3, 4, 5), torch.float32, 960 + 24 + 24),
        ("batch_norm", "eval", (2, 3, 4, 5), torch.float32, 960 + 24 + 24),
        # x, dy, dx (3 * 120 * 4) + weight, dweight, dbias (3 * 3 * 4)
        ("batch_norm", "bwd", (2, 3, 4, 5), torch.float32, 1440 + 36),
        ("layer_norm", "fwd", (4, 8), torch.bfloat16, 2 * 32 * 2 + 2 * 8 * 2),
        ("layer_norm", "bwd", (4, 8), torch.bfloat16, 3 * 32 * 2 + 3 * 8 * 2),
        ("rms_norm", "fwd", (4, 8), torch.bfloat16, 2 * 32 * 2 + 8 * 2),  # no bias
        ("rms_norm", "bwd", (4, 8), torch.bfloat16, 3 * 32 * 2 + 2 * 8 * 2),
        ("group_norm", "fwd", (2, 4, 3), torch.float32, 2 * 24 * 4 + 2 * 4 * 4),
        ("group_norm", "bwd", (2, 4, 3), torch.float32, 3 * 24 * 4 + 3 * 4 * 4),
    ],
)
def test_min_bytes(op, pass_, shape, dtype, expected):
    assert gpu.min_bytes(op, pass_, shape, dtype) == expected


def test_min_bytes_rejects_unknown_names():
    with pytest.raises(ValueError):
        gpu.min_bytes("batch_norm", "sideways", (2, 3), torch.float32)
    with pytest.raises(ValueError):
        gpu.min_bytes("dropout", "fwd", (2, 3), torch.float32)


@pytest.mark.parametrize("quick", [False, True])
def test_configs_are_valid(quick):
    cfgs = gpu.configs(quick)
    assert {c.op for c in cfgs} == set(gpu.OPS)
    for c in cfgs:
        assert c.mode == "train" or (c.op == "batch_norm" and c.mode == "eval")
        assert c.layout in ("nchw", "channels_last", "rows")
        if c.op == "group_norm":
            assert c.shape[1] % c.groups == 0
    if quick:
        return
    big = [c for c in cfgs if c.tensor_mb >= gpu.LATENCY_MAX_MB]
    assert len(big) + len([c for c in cfgs if c.tensor_mb < gpu.LATENCY_MAX_MB]) == len(cfgs)
    # LayerNorm/RMSNorm: M * N = 2^27 with N from 512 to 65536
    rows = [c for c in big if c.op in ("layer_norm", "rms_norm")]
    assert all(math.prod(c.shape) == 2**27 for c in rows)
    assert {c.shape[-1] for c in rows} >= {512, 65536}
    # BatchNorm: the ResNet-50 ladder at batch 256, both dtypes, both layouts, train and eval
    bn = [c for c in big if c.op == "batch_norm"]
    assert {c.shape[0] for c in bn} == {256}
    assert {(c.dtype, c.layout, c.mode) for c in bn} == {
        (d, lay, m)
        for d in (torch.float32, torch.bfloat16)
        for lay in ("nchw", "channels_last")
        for m in ("train", "eval")
    }
    # every bandwidth goal has cases big enough to be judged
    for op, pass_ in gpu.GOALS:
        assert any(c.op == op and pass_ in c.passes and c.tensor_mb >= gpu.GOAL_MIN_MB for c in big)


def fake_row(op, pass_, shape, normlib_ms, eager_ms, compile_ms, copy_gbps=1000.0):
    cfg = gpu.Config(
        op, shape, torch.float32, "rows" if op in ("layer_norm", "rms_norm") else "nchw"
    )
    ms = {"normlib": normlib_ms, "eager": eager_ms, "compile": compile_ms}
    return gpu.make_row(cfg, pass_, ms, copy_gbps)


def test_make_row_computes_bandwidth():
    row = fake_row("layer_norm", "fwd", (1024, 1024), 2.0, 4.0, 3.0)
    assert list(row) == ROW_KEYS
    assert row["min_bytes"] == 2 * 2**20 * 4 + 2 * 1024 * 4
    assert row["normlib_gbps"] == pytest.approx(row["min_bytes"] / 2e-3 / 1e9)
    assert row["pct_copy"] == pytest.approx(100 * row["normlib_gbps"] / 1000.0)
    assert row["dtype"] == "float32" and row["shape"] == [1024, 1024]


def test_summary_reports_speedups_and_goals():
    big = (4096, 8192)  # 134 MB in float32: judged by the bandwidth goals
    small = (64, 64)
    rows = [
        fake_row("layer_norm", "fwd", big, 1.0, 2.0, 0.5),
        fake_row("layer_norm", "bwd", big, 1.0, 2.0, 2.0),
        fake_row("layer_norm", "fwd", small, 0.01, 0.02, 0.03),
    ]
    doc = {"device": "fake", "copy_gbps": 1000.0, "results": rows}
    text = "\n".join(gpu.summarize(doc))
    # vs eager: geomean(2, 2) = 2; vs compile: geomean(0.5, 2) = 1 (the small case is not counted)
    assert "layer_norm       2     2.00x       1.00x  PASS" in text
    ln_fwd_pct = rows[0]["pct_copy"]
    assert f"worst {ln_fwd_pct:.0f}%" in text
    assert ("PASS" if ln_fwd_pct >= 90 else "FAIL") in text.split(">= 90%")[1].splitlines()[0]
    assert "latency class" in text and "(64, 64)" in text


def test_device_slug():
    assert gpu.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu.device_slug("cpu") == "cpu"


def test_run_on_cpu_with_a_fake_timer(tmp_path, capsys):
    """The whole pipeline on tiny CPU tensors (kernels through the interpreter): every timed
    function is called, then the JSON file has exactly the promised form and the plot exists."""
    calls = []

    def timer(fn, grad_to_none=None):
        fn()  # the benchmark's closures must run
        calls.append(fn)
        return 0.5 + 0.1 * len(calls)

    f32 = torch.float32
    cfgs = [
        gpu.Config("batch_norm", (2, 3, 4, 4), f32, "nchw"),
        gpu.Config("batch_norm", (2, 3, 4, 4), torch.bfloat16, "channels_last", "eval"),
        gpu.Config("layer_norm", (4, 8), torch.bfloat16, "rows"),
        gpu.Config("rms_norm", (4, 8), f32, "rows"),
        gpu.Config("group_norm", (2, 4, 3, 3), f32, "nchw", groups=2),
    ]
    assert gpu.run(out=tmp_path, device="cpu", timer=timer, compiler=lambda f: f,
                   config_list=cfgs) == 0  # fmt: skip
    assert len(calls) == 1 + 3 * (2 + 1 + 2 + 2 + 2)  # copy + 3 impls x passes
    doc = json.loads((tmp_path / "cpu.json").read_text())
    assert list(doc) == ["device", "torch", "triton", "date", "copy_gbps", "results"]
    assert doc["device"] == "cpu" and isinstance(doc["copy_gbps"], float)
    assert [(r["op"], r["pass"]) for r in doc["results"]] == [
        ("batch_norm", "fwd"), ("batch_norm", "bwd"), ("batch_norm", "eval"),
        ("layer_norm", "fwd"), ("layer_norm", "bwd"), ("rms_norm", "fwd"), ("rms_norm", "bwd"),
        ("group_norm", "fwd"), ("group_norm", "bwd"),
    ]  # fmt: skip
    types = {"shape": list, "min_bytes": int, "op": str, "pass": str, "dtype": str, "layout": str}
    for r in doc["results"]:
        assert list(r) == ROW_KEYS
        for k in ROW_KEYS:
            assert isinstance(r[k], types.get(k, float)), k
    assert doc["results"][2]["layout"] == "channels_last"
    assert doc["results"][2]["dtype"] == "bfloat16"
    png = (tmp_path / "cpu.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "geomean speedup" in out and "wrote" in out


def test_run_refuses_cuda_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        gpu.run(device="cuda")
