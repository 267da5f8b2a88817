# H200 call 2 of session 15 (issues 15 and 12).
# 1. ONE_COORDINATE_TEST (new): a block partial in one coordinate tests that one alone, against every
#    coordinate of the layout's PARTIAL_DIMS: attention.py's neighbourhood rows at CogVideoX-5B
#    (head_dim 64; stride 1 and blocked) and HunyuanVideo 720p (stride 1, text);
# 2. the dynamic methods' rows with today's presets and key ranges, one file (attention_h200_dynamic.json);
# 3. the kernel's GPU tests for the new paths.
# Everything was to be packed into one archive (the device returns a limited number of files): tar
# failed, archiving the directory it wrote into; the Wan dynamic rows came back, HunyuanVideo's hit the
# 130 s limit (call c). ONE_COORDINATE_TEST was removed after this call: slower on stride-1 windows.
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session15_b.sh")
export PYTHONUNBUFFERED=1
FLAGS=benchmarks/probes/with_flags.py
ONE=ditaccel.kernels.block_sparse_triton.ONE_COORDINATE_TEST
COMMON="--rounds 3 --no-flex --no-xformers"
for one in False True; do
  timeout 100 python $FLAGS $ONE=$one -- benchmarks/attention.py --out $OUT $COMMON --cases cogvideox5b \
    --methods neighborhood_stride1,neighborhood_blocked --tag _cog_one_$one > $OUT/attention_cog_one_$one.log 2>&1
  timeout 70 python $FLAGS $ONE=$one -- benchmarks/attention.py --out $OUT $COMMON --cases hunyuan_720p \
    --methods neighborhood_stride1 --tag _hy_one_$one > $OUT/attention_hy_one_$one.log 2>&1
done
timeout 130 python benchmarks/attention.py --out $OUT $COMMON --cases wan14b_720p,hunyuan_720p \
  --methods topk,piecewise,pyramid --tag _dynamic > $OUT/attention_dynamic.log 2>&1
python - <<'PY' | tee $OUT/summary.txt
import json, glob, os
for f in sorted(glob.glob(os.path.join(os.environ["OUT"], "attention_*.json"))):
    for r in json.load(open(f))["records"]:
        if "ours_ms" in r:
            print(os.path.basename(f), r["case"], r["method"], "ours", round(r["ours_ms"], 3), "kernel", r.get("kernel_ms", r.get("kernel_canonical_ms")),
                  "cudnn", round(r["cudnn_dense_ms"], 2), "x", round(r["speedup_vs_cudnn"], 3),
                  "rate", r.get("exact_rate_vs_cudnn", r.get("useful_vs_cudnn_rate")), "overhead", r.get("overhead_share"))
PY
timeout 120 python -m pytest -q -x tests/test_triton_kernel.py -k "one_coordinate or text_rows or neighborhood" > $OUT/pytest_h200.log 2>&1
tail -2 $OUT/pytest_h200.log | tee -a $OUT/summary.txt
cd $OUT && tar czf session15_b.tgz --exclude=session15_b.tgz . && find . -type f ! -name session15_b.tgz ! -name summary.txt -delete
