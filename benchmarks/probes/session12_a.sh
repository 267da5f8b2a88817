# H200 call 1 of session 12 (issues 15, 13):
# 1. where a patched-but-dense forward's ~0.2 ms goes: profiler traces of LTX-Video 480p and FLUX
#    1024px (two blocks), twin against the full-window patch (runs dense);
# 2. the 1.3B pipeline rows sessions 8 and 11 did not reach: FirstBlockCache alone and with radial,
#    dense again in the same run.
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session12_a.sh")
export PYTHONUNBUFFERED=1
timeout 100 python benchmarks/probes/prehook_overhead.py --rounds 50 --trace $OUT/traces > $OUT/prehook_overhead.log 2>&1
grep -E '^\{' $OUT/prehook_overhead.log | cut -c1-400
timeout 320 python benchmarks/pipeline.py --part pipeline --out $OUT --combinations "dense,first_block_cache,radial + first_block_cache" \
  > $OUT/pipeline.log 2>&1; tail -4 $OUT/pipeline.log | cut -c1-300
