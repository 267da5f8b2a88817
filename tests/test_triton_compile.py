"""The GPU build of the kernel, checked on a machine without a GPU: compile it for Hopper (sm_90)
in a separate process (the rest of the suite runs Triton's interpreter) and check that it uses
the Hopper matrix instructions and TMA, fits in shared memory and spills nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

H100_SMEM_PER_BLOCK = 232448


def test_kernel_compiles_for_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, os.path.join(root, "tests", "compile_sm90.py")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    results = json.loads(res.stdout.strip().splitlines()[-1])
    for r in results:
        assert r["shared"] <= H100_SMEM_PER_BLOCK, r
        assert r["wgmma"] > 0, r
        assert r["local_memory"] == 0, r
        assert (r["tma_loads"] > 0) == (r.get("mode", 1) > 0), r
