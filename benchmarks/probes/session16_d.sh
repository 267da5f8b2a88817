# H200 call 4 of session 16 (issue 15): the two cases call 3's budget left out (FLUX 1024px, Wan 480p),
# same settings as session16_c.sh.
export PYTHONUNBUFFERED=1
W=/tmp/session16_d && mkdir -p $W
timeout 200 python benchmarks/attention.py --out $W --rounds 3 --no-flex --no-xformers --budget-s 150 --tag _static_rest \
  --cases flux_1024,wan14b_480p > $W/attention_static_rest.log 2>&1
python - <<'PY' | tee $W/summary.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/session16_d/attention_*.json")):
    for r in json.load(open(f))["records"]:
        if "ours_ms" in r:
            print(os.path.basename(f), r["case"], r["method"], "ours", round(r["ours_ms"], 3), "canon", r.get("kernel_canonical_ms"),
                  "cudnn", round(r["cudnn_dense_ms"], 2), "x", round(r["speedup_vs_cudnn"], 3), "rate", r.get("useful_vs_cudnn_rate"),
                  "|", (r.get("config") or "")[:80])
PY
cp $W/summary.txt $OUT/ && tar czf $OUT/session16_d.tgz -C $W .
