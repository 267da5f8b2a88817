"""Profile target for ncu (issue 15, head_dim 64): CogVideoX-5B's neighbourhood layouts on canonical
tensors, the kernel alone with the autotuner's config at that shape (128 x 128, 4 warps, 3 stages),
against the same kernel with every block whole (the layout's partial flags cleared: wrong output,
same blocks, no mask). Session 15 measured ~2.4 us per computed block with masks against 1.32 without
(program_cost_probe.py) and suspects the element-wise box test; ncu's pipe utilisation and issue
stalls say whether the ALU or the FMA pipe is what the masked blocks wait on.

    python benchmarks/probes/ncu_hd64.py {stride1,blocked} {masked,whole}
    ncu --kernel-name regex:_block_sparse_fwd --launch-skip 3 --launch-count 1 --section ComputeWorkloadAnalysis \\
        --section WarpStateStats --section InstructionStats --section SpeedOfLight python ... (see session16 scripts)
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from attention import CASES, build_layouts, run_ours  # noqa: E402

method, variant = sys.argv[1], sys.argv[2]
cfg = CASES["cogvideox5b"]
lay = build_layouts("cogvideox5b", cfg, [f"neighborhood_{method}"])[f"neighborhood_{method}"]
if variant == "whole":
    lay.kv_partial.zero_()
H, D = cfg["heads"], cfg["dim"]
q, k, v = (torch.randn(1, lay.seq_len, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
config = dict(BLOCK_M=128, BLOCK_N=128, num_warps=4, num_stages=3)
for _ in range(5):
    run_ours(q, k, v, lay, None, config)
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20):
    run_ours(q, k, v, lay, None, config)
end.record()
torch.cuda.synchronize()
print(f"{method} {variant}: {start.elapsed_time(end) / 20:.3f} ms, block density {lay.block_density():.3f}")
