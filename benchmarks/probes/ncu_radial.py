"""Profile target for ncu: our kernel on one case's radial layout (and its all-blocks twin), fixed
config (no autotuning), a few launches. Usage: python ncu_radial.py CASE {radial,all} """
import os, sys, math, torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from attention import CASES, build_layouts, all_blocks_layout, run_ours  # noqa: E402

name, which = sys.argv[1], sys.argv[2]
cfg = CASES[name]
lay = build_layouts(name, cfg, ["radial"])["radial"]
if which == "all":
    lay = all_blocks_layout(lay)
H, D = cfg["heads"], cfg["dim"]
n_video = math.prod(cfg["grid"])
text = cfg["text"]
no_copy = text == 0
N = n_video if no_copy else lay.seq_len
kv_len = None
if text:
    video_len = (lay.num_blocks - lay.num_text_blocks) * lay.block_size
    kv_len = torch.tensor([video_len + cfg.get("text_real", text)], dtype=torch.int32, device="cuda")
q, k, v = (torch.randn(1, N, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
conf = dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3)
for _ in range(3):
    run_ours(q, k, v, lay, kv_len, config=conf)
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record(); run_ours(q, k, v, lay, kv_len, config=conf); e.record(); torch.cuda.synchronize()
print(name, which, "ms", s.elapsed_time(e), "blocks", float(lay.kv_counts.double().sum()))
