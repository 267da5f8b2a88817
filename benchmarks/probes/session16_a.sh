# H200 call 1 of session 16 (issue 15, head_dim 64): partial blocks masked through the tensor cores
# (block_sparse_triton._dot_masked_scores, layout.mask_columns) against the element-wise box test,
# in the same call (DOT_MASK_HEAD_DIMS set per run): CogVideoX-5B's neighbourhood rows (head_dim 64,
# checked against the reference in bf16), HunyuanVideo 720p stride 1 (head_dim 128, text) with the
# dot mask at head_dim 128 too; then the kernel's GPU tests for both masks.
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session16_a.sh")
export PYTHONUNBUFFERED=1
W=/tmp/session16_a && mkdir -p $W
FLAGS=benchmarks/probes/with_flags.py
DOT=ditaccel.kernels.block_sparse_triton.DOT_MASK_HEAD_DIMS
COMMON="--rounds 3 --no-flex --no-xformers"
timeout 110 python $FLAGS "$DOT=(64,)" -- benchmarks/attention.py --out $W $COMMON --check --cases cogvideox5b \
  --methods neighborhood_stride1,neighborhood_blocked --tag _cog_dot > $W/attention_cog_dot.log 2>&1
timeout 90 python $FLAGS "$DOT=()" -- benchmarks/attention.py --out $W $COMMON --cases cogvideox5b \
  --methods neighborhood_stride1,neighborhood_blocked --tag _cog_elementwise > $W/attention_cog_elementwise.log 2>&1
for d in "()" "(64,128)"; do
  timeout 80 python $FLAGS "$DOT=$d" -- benchmarks/attention.py --out $W $COMMON --cases hunyuan_720p \
    --methods neighborhood_stride1 --tag "_hy_dot$(echo $d | tr -d '(),')" > "$W/attention_hy_dot$(echo $d | tr -d '(),').log" 2>&1
done
python - <<'PY' | tee $W/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/session16_a/attention_*.json")):
    d = json.load(open(f))
    for r in d["records"]:
        if "ours_ms" in r:
            print(os.path.basename(f), r["case"], r["method"], "ours", round(r["ours_ms"], 3), "kernel", r.get("kernel_ms", r.get("kernel_canonical_ms")),
                  "cudnn", round(r["cudnn_dense_ms"], 2), "x", round(r["speedup_vs_cudnn"], 3),
                  "rate", r.get("exact_rate_vs_cudnn", r.get("useful_vs_cudnn_rate")), "overhead", r.get("overhead_share"))
    for c in d.get("checks", []):
        print(os.path.basename(f), "check", c)
PY
timeout 150 python -m pytest -q -x tests/test_triton_kernel.py -k "neighborhood or box_test or text_tokens or model_order or tiled" > $W/pytest_h200.log 2>&1
tail -3 $W/pytest_h200.log | tee -a $W/summary.txt
cp $W/summary.txt $OUT/ && tar czf $OUT/session16_a.tgz -C $W .
