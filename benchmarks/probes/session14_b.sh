# H200 call 2 of session 14 (issue 12): key ranges in the piecewise / top-k kernel (a head's K and V
# past L2_KV_BYTES: the exact phase as launches over contiguous key ranges, the softmax carried).
# 1. the kernel tests on the GPU (bf16 included, compiled, autotuned);
# 2. topk_l2_probe.py: one launch against 2, 3, 4 ranges on the same selection (fixed config);
# 3. attention.py's top-k and piecewise rows at Wan2.1-14B 720p and HunyuanVideo 720p, as shipped
#    with every exact phase in one launch (key ranges were off by default when this ran) and with key
#    ranges on (L2_KV_BYTES = 40 MB, the default since), same machine.
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session14_b.sh")
export PYTHONUNBUFFERED=1
timeout 150 python -m pytest -q -x tests/test_piecewise_triton.py -k "key_range or range_edges or bfloat16 or synchronise or density or extra" > $OUT/pytest_piecewise_h200.log 2>&1
tail -2 $OUT/pytest_piecewise_h200.log
timeout 150 python benchmarks/probes/topk_l2_probe.py > $OUT/topk_l2_probe_ranges.log 2>&1
grep -E '"real|shared' $OUT/topk_l2_probe_ranges.log | cut -c1-200
COMMON="--rounds 3 --no-flex --no-xformers --methods topk,piecewise --cases wan14b_720p,hunyuan_720p"
timeout 120 python benchmarks/attention.py --out $OUT $COMMON --tag _one_launch > $OUT/attention_one_launch.log 2>&1
timeout 120 python benchmarks/probes/topk_l2_probe.py --attention-kv-ranges --out $OUT $COMMON --tag _kv_ranges > $OUT/attention_kv_ranges.log 2>&1
python - <<'PY'
import json, glob, os
for f in sorted(glob.glob(os.path.join(os.environ["OUT"], "attention_*.json"))):
    for r in json.load(open(f))["records"]:
        if "ours_ms" in r:
            print(os.path.basename(f), r["case"], r["method"], "ours", round(r["ours_ms"], 2), "kernel", round(r["kernel_ms"], 2),
                  "cudnn", round(r["cudnn_dense_ms"], 1), "x", round(r["speedup_vs_cudnn"], 2), "rate", r.get("exact_rate_vs_cudnn"))
PY
