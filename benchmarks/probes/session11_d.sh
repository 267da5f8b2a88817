# H200 call (issue 13): (b) every step kind at Wan2.1-14B 720p, now with TaylorSeer lite's
# predicted forward, and the 50-step totals of each schedule; then (a) the Wan2.1-1.3B 480p
# pipeline for the TaylorSeer combinations with dense again in the same run (FirstBlockCache, not
# reached in session 8, left for a later call: the device budget); then where a patched-but-dense
# forward's ~0.2 ms goes (issue 15).
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session11_d.sh")
export PYTHONUNBUFFERED=1
timeout 230 python benchmarks/pipeline.py --part steps --out $OUT > $OUT/pipeline_steps.log 2>&1; tail -14 $OUT/pipeline_steps.log | cut -c1-300
TS="taylorseer_cache(use_lite_mode=True, cache_interval=3, disable_cache_before_step=12)"
timeout 200 python benchmarks/pipeline.py --part pipeline --out $OUT --combinations "dense,$TS,radial + $TS" > $OUT/pipeline.log 2>&1
tail -5 $OUT/pipeline.log | cut -c1-300
timeout 60 python benchmarks/probes/prehook_overhead.py --rounds 100 > $OUT/prehook_overhead.log 2>&1; tail -3 $OUT/prehook_overhead.log | cut -c1-600
