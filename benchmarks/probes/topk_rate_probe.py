"""Why top-k's exact phase runs at 0.79 of cuDNN's rate per block at HunyuanVideo 720p and 0.85 at
Wan2.1-14B 720p (issue 12 probe). attention.py's top-k kernel timing has no text keys, so the text
is not it. Hypothesis: one HunyuanVideo head's K and V (118,800 tokens x 128 x 2 x bf16 = 61 MB)
overflow the H200's L2, which a Wan head's (75,600 tokens: 39 MB) fit in, and top-k's scattered key
blocks reuse L2 less than dense attention's sweep. Test: swap the sequence lengths and keep the
heads: HunyuanVideo's 24 heads at Wan's grid, Wan's 40 heads at HunyuanVideo's grid. If the rate
follows the sequence length, the per-head footprint is implicated; if it follows the heads, it is not.

Usage: python benchmarks/probes/topk_rate_probe.py --out DIR   (runs attention.py's top-k rows)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attention  # noqa: E402

attention.CASES.update({
    "hy_heads_wan_grid": dict(attention.CASES["hunyuan_720p"], grid=attention.CASES["wan14b_720p"]["grid"]),
    "wan_heads_hy_grid": dict(attention.CASES["wan14b_720p"], grid=attention.CASES["hunyuan_720p"]["grid"]),
})
attention.MODELS.update({"hy_heads_wan_grid": attention.MODELS["hunyuan_720p"], "wan_heads_hy_grid": attention.MODELS["wan14b_720p"]})

if __name__ == "__main__":
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "."
    sys.argv = [sys.argv[0], "--out", out, "--rounds", "3", "--no-flex", "--no-xformers", "--methods", "topk",
                "--cases", "wan14b_720p,hunyuan_720p,hy_heads_wan_grid,wan_heads_hy_grid", "--tag", "_topk_rate_probe"]
    attention.main()
