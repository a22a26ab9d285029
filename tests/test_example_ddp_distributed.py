"""examples/ddp_syncbn.py under torchrun (2 ranks, gloo on 127.0.0.1) matches one process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from normlib.distributed_demo import free_port


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")  # .venv/bin/torchrun next to .venv/bin/python
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def test_ddp_syncbn_example_matches_one_process(root):
    cmd = [
        *_torchrun(),
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        str(root / "examples" / "ddp_syncbn.py"),
        "--steps=20",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a session of its own, so a timeout takes torchrun AND its workers down
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, out
    match = re.search(r"^MATCH: SyncBatchNorm on 2 ranks .* largest difference (\S+) ", out, re.M)
    assert match, out
    assert float(match.group(1)) < 1e-9
    # the contrast: without synchronization the runs differ
    unsynced = re.search(
        r"unsynchronized BatchNorm vs one process: max \|parameter difference\| (\S+),", out
    )
    assert unsynced and float(unsynced.group(1)) > 1e-3, out
