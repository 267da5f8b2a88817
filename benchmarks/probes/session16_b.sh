# H200 call 2 of session 16 (issue 15): attention.py's static rows with the dot mask at head_dim 64
# (the default after call 1), for the rates and the whole-block rows against session 10's
# attention_h200.json; then the head_dim-128 stride-1 rows with the dot mask at head_dim 128 too.
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session16_b.sh")
export PYTHONUNBUFFERED=1
W=/tmp/session16_b && mkdir -p $W
FLAGS=benchmarks/probes/with_flags.py
DOT=ditaccel.kernels.block_sparse_triton.DOT_MASK_HEAD_DIMS
timeout 380 python benchmarks/attention.py --out $W --rounds 3 --no-flex --no-xformers --budget-s 300 --tag _static \
  --cases cogvideox5b,hunyuan_720p,wan14b_720p,hunyuan_natten,flux_1024,wan14b_480p > $W/attention_static.log 2>&1
timeout 190 python $FLAGS "$DOT=(64,128)" -- benchmarks/attention.py --out $W --rounds 3 --no-flex --no-xformers --budget-s 120 \
  --cases hunyuan_720p,wan14b_720p,hunyuan_natten --methods neighborhood_stride1 --tag _dot128 > $W/attention_dot128.log 2>&1
python - <<'PY' | tee $W/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/session16_b/attention_*.json")):
    for r in json.load(open(f))["records"]:
        if "ours_ms" in r:
            print(os.path.basename(f), r["case"], r["method"], "ours", round(r["ours_ms"], 3), "canon", r.get("kernel_canonical_ms"),
                  "cudnn", round(r["cudnn_dense_ms"], 2), "x", round(r["speedup_vs_cudnn"], 3), "rate", r.get("useful_vs_cudnn_rate"))
PY
cp $W/summary.txt $OUT/ && tar czf $OUT/session16_b.tgz -C $W .
