"""The GPU build of the kernel, checked on a machine without a GPU: compile it for Hopper (sm_90)
in a separate process (the rest of the suite runs Triton's interpreter) and check that it uses
the Hopper matrix instructions and TMA, fits in shared memory, spills nothing, and that the key
loop keeps NUM_STAGES buffers of K and V (a loop without a branch once got 2 whatever num_stages
said: 15% slower on H100, benchmarks/results/NOTES.md)."""

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
        if not r.get("text"):
            d, bm, bn, stages = r.get("D", 128), r.get("BM", 128), r.get("BN", 128), r.get("stages", 3)
            assert r["shared"] >= (bm * d + stages * 2 * bn * d) * 2, f"K/V not {stages}-buffered: {r}"
