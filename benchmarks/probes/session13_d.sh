# H200 call 4 of session 13 (issue 12): top-k's exact rate at swapped sequence lengths and head counts
# (probes/topk_rate_probe.py says why).
#   run(carry=[...wheels], command="... (as session13_a.sh) ...; bash benchmarks/probes/session13_d.sh")
export PYTHONUNBUFFERED=1
timeout 200 python benchmarks/probes/topk_rate_probe.py --out $OUT > $OUT/topk_rate_probe.log 2>&1
grep '"method"' $OUT/topk_rate_probe.log | cut -c1-260
python - <<'PY'
import json, glob, os
for f in glob.glob(os.path.join(os.environ["OUT"], "attention_*topk_rate_probe*.json")):
    for r in json.load(open(f))["records"]:
        print(r["case"], r.get("heads"), r.get("video_tokens"), "rate", r.get("exact_rate_vs_cudnn"), "kernel", r.get("kernel_ms"), "cudnn", r.get("cudnn_dense_ms"))
PY
