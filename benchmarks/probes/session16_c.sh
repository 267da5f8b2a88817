# H200 call 3 of session 16 (issue 15): attention.py's static rows with the dot mask offered at both
# head dims and the autotuner choosing, per shape, between it (2 stages at head_dim 128: its one-hot
# columns need the third stage's shared memory) and the element-wise test; the config each runtime
# call runs is recorded. Then the bf16 check of the dot mask at head_dim 128 (NATTEN's shape).
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session16_c.sh")
export PYTHONUNBUFFERED=1
W=/tmp/session16_c && mkdir -p $W
timeout 470 python benchmarks/attention.py --out $W --rounds 3 --no-flex --no-xformers --budget-s 370 --tag _static \
  --cases cogvideox5b,hunyuan_720p,wan14b_720p,hunyuan_natten,flux_1024,wan14b_480p > $W/attention_static.log 2>&1
timeout 90 python benchmarks/attention.py --out $W --rounds 1 --no-flex --no-xformers --check --tag _check128 \
  --cases hunyuan_natten --methods neighborhood_stride1 > $W/attention_check128.log 2>&1
python - <<'PY' | tee $W/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/session16_c/attention_*.json")):
    d = json.load(open(f))
    for r in d["records"]:
        if "ours_ms" in r:
            print(os.path.basename(f), r["case"], r["method"], "ours", round(r["ours_ms"], 3), "canon", r.get("kernel_canonical_ms"),
                  "cudnn", round(r["cudnn_dense_ms"], 2), "x", round(r["speedup_vs_cudnn"], 3), "rate", r.get("useful_vs_cudnn_rate"),
                  "|", (r.get("config") or "")[:80])
    for c in d.get("checks", []):
        print(os.path.basename(f), "check", {k: c[k] for k in ("case", "method", "rel_l2_err", "rows_over_5pct", "finite")})
PY
cp $W/summary.txt $OUT/ && tar czf $OUT/session16_c.tgz -C $W .
