# H200 call 3 of session 15: the rows call b's time limits cut. HunyuanVideo 720p's dynamic rows with
# today's presets (to join call b's Wan rows in attention_h200_dynamic.json), and its stride-1
# neighbourhood row again with 5 rounds (text query tiles first, the default now).
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session15_c.sh")
export PYTHONUNBUFFERED=1
COMMON="--no-flex --no-xformers --cases hunyuan_720p"
timeout 200 python benchmarks/attention.py --out $OUT $COMMON --rounds 3 --methods topk,piecewise,pyramid --tag _dynamic_hy > $OUT/attention_dynamic_hy.log 2>&1
tail -4 $OUT/attention_dynamic_hy.log
timeout 150 python benchmarks/attention.py --out $OUT $COMMON --rounds 5 --methods neighborhood_stride1 --tag _hy_stride1 > $OUT/attention_hy_stride1.log 2>&1
tail -3 $OUT/attention_hy_stride1.log
