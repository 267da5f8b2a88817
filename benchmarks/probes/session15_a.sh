# H200 call 1 of session 15 (issues 15 and 12).
# 1. joint attention's text query tiles started first in each head (TEXT_ROWS_FIRST, new) against
#    canonical order (last): attention.py's neighbourhood rows at HunyuanVideo 720p (text last,
#    stride 1) and CogVideoX-5B (head_dim 64, text first), and radial at HunyuanVideo 720p;
# 2. program_cost_probe.py: the kernel's fixed cost per program against its cost per key block,
#    head_dim 64 and 128 (why head_dim-64 layouts run at 0.53-0.56 of cuDNN's rate per block);
# 3. top-k at HunyuanVideo 720p with key ranges of 16 MB (4 ranges) against the default 24 MB (3);
# 4. the block-sparse kernel's GPU tests touching text rows (bf16, compiled, autotuned).
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session15_a.sh")
export PYTHONUNBUFFERED=1
FLAGS=benchmarks/probes/with_flags.py
BST=ditaccel.kernels.block_sparse_triton.TEXT_ROWS_FIRST
COMMON="--rounds 3 --no-flex --no-xformers"
for first in False True; do
  timeout 100 python $FLAGS $BST=$first -- benchmarks/attention.py --out $OUT $COMMON --cases hunyuan_720p \
    --methods neighborhood_stride1,radial --tag _hy_first_$first > $OUT/attention_hy_first_$first.log 2>&1
  timeout 60 python $FLAGS $BST=$first -- benchmarks/attention.py --out $OUT $COMMON --cases cogvideox5b \
    --methods neighborhood_stride1,neighborhood_blocked --tag _cog_first_$first > $OUT/attention_cog_first_$first.log 2>&1
done
timeout 120 python benchmarks/probes/program_cost_probe.py --out $OUT > $OUT/program_cost.log 2>&1
grep fit $OUT/program_cost.log
PWT=ditaccel.kernels.piecewise_triton.KV_RANGE_BYTES
for mb in 24 16; do
  timeout 60 python $FLAGS $PWT=$((mb << 20)) -- benchmarks/attention.py --out $OUT $COMMON --cases hunyuan_720p \
    --methods topk --tag _topk_range_${mb}mb > $OUT/attention_topk_range_${mb}mb.log 2>&1
done
python - <<'PY'
import json, glob, os
for f in sorted(glob.glob(os.path.join(os.environ["OUT"], "attention_*.json"))):
    for r in json.load(open(f))["records"]:
        if "ours_ms" in r:
            print(os.path.basename(f), r["case"], r["method"], "ours", round(r["ours_ms"], 3), "kernel", r.get("kernel_ms", r.get("kernel_canonical_ms")),
                  "cudnn", round(r["cudnn_dense_ms"], 2), "x", round(r["speedup_vs_cudnn"], 3),
                  "rate", r.get("exact_rate_vs_cudnn", r.get("useful_vs_cudnn_rate")))
PY
timeout 150 python -m pytest -q -x tests/test_triton_kernel.py -k "text or model_order or padded" > $OUT/pytest_text_h200.log 2>&1
tail -2 $OUT/pytest_text_h200.log
