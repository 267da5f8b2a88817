"""Profile target for ncu: NATTEN's case (neighbourhood, whole blocks), the kernel reading key/value
tiles in place as grid boxes (runtime box path) vs on pre-tiled tensors. Usage: python ncu_box.py {box,rows}"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from attention import CASES, build_layouts  # noqa: E402

from ditaccel.kernels import ops  # noqa: E402
from ditaccel.kernels.attention import block_sparse_attention_model_order  # noqa: E402

which = sys.argv[1]
cfg = CASES["hunyuan_natten"]
lay = build_layouts("hunyuan_natten", cfg, ["neighborhood_blocked"])["neighborhood_blocked"]
H, D = cfg["heads"], cfg["dim"]
N = math.prod(cfg["grid"])
q, k, v = (torch.randn(1, N, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
if which == "rows":
    q, k, v = (lay.tiling.to_canonical(x).contiguous() for x in (q, k, v))
    from ditaccel.kernels.block_sparse_triton import block_sparse_attention_fwd

    def run():
        return block_sparse_attention_fwd(q, k, v, lay.kv_counts, lay.kv_indices, lay.kv_partial, lay.q_lo, lay.q_hi, lay.k_coord,
                                          None, None, 128, has_partial=False,
                                          config=dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3))
else:
    from ditaccel.kernels import block_sparse_triton as bst

    bst._block_sparse_fwd_tuned.configs = [bst._config(128, 128, 8, 3)]  # no autotuning launches to skip
    ops.TOKEN_PATH = "box"

    def run():
        return block_sparse_attention_model_order(q, k, v, lay, backend="triton")
for _ in range(3):
    run()
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record(); run(); e.record(); torch.cuda.synchronize()  # noqa: E702
print(which, "ms", s.elapsed_time(e))
