# Next H200 call (issues 13, 15, 12), left by session 11:
# 1. where a patched-but-dense forward's ~0.2 ms goes: profiler traces of LTX-Video 480p and FLUX
#    1024px (two blocks), twin against the full-window patch (runs dense);
# 2. the 1.3B pipeline rows session 8 and 11 did not reach: FirstBlockCache alone and with radial,
#    dense again in the same run;
# 3. pyramid's importance pass at 16 samples per block, overhead now timed with the samples used.
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session12_a.sh")
export PYTHONUNBUFFERED=1
timeout 90 python benchmarks/probes/prehook_overhead.py --rounds 50 --trace $OUT/traces > $OUT/prehook_overhead.log 2>&1
grep -E '^\{' $OUT/prehook_overhead.log | cut -c1-400
timeout 200 python benchmarks/pipeline.py --part pipeline --out $OUT --combinations "dense,first_block_cache,radial + first_block_cache" \
  > $OUT/pipeline.log 2>&1; tail -4 $OUT/pipeline.log | cut -c1-300
for S in 32 16; do
  timeout 120 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --methods pyramid \
    --cases wan14b_720p,hunyuan_720p --pyramid-samples $S --tag _pyramid_s$S > $OUT/attention_pyramid_s$S.log 2>&1
  grep '"method"' $OUT/attention_pyramid_s$S.log | cut -c1-220
done
