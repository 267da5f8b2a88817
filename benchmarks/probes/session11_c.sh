# Next H200 call (issue 15, head_dim 64): every kernel config on CogVideoX-5B's stride-1 and blocked
# neighbourhoods (48 x 64 heads, 226 text tokens first), to see whether the autotuner's choice is
# what holds the rate at 0.53-0.56 of cuDNN's per computed block (target 0.60), then HunyuanVideo
# 720p stride 1 with its padded text (0.632, target 0.65).
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session11_c.sh")
export PYTHONUNBUFFERED=1
for M in neighborhood_stride1 neighborhood_blocked; do
  timeout 200 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --methods $M --cases cogvideox5b \
    --sweep cogvideox5b:$M --tag _sweep_cog_$M > $OUT/sweep_cog_$M.log 2>&1; tail -25 $OUT/sweep_cog_$M.log | cut -c1-200
done
timeout 150 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --methods neighborhood_stride1 \
  --cases hunyuan_720p --sweep hunyuan_720p:neighborhood_stride1 --tag _sweep_hy > $OUT/sweep_hy.log 2>&1; tail -25 $OUT/sweep_hy.log | cut -c1-200
