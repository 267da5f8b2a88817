# H200 call (issue 13): (b) every step kind at Wan2.1-14B 720p, now with TaylorSeer lite's
# predicted forward, and the 50-step totals of each schedule; then (a) the Wan2.1-1.3B 480p
# pipeline for the combinations session 8's run did not reach (FirstBlockCache) and the TaylorSeer
# ones, with dense again in the same run.
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session11_d.sh")
export PYTHONUNBUFFERED=1
timeout 250 python benchmarks/pipeline.py --part steps --out $OUT > $OUT/pipeline_steps.log 2>&1; tail -14 $OUT/pipeline_steps.log | cut -c1-300
TS="taylorseer_cache(use_lite_mode=True, cache_interval=3, disable_cache_before_step=12)"
timeout 285 python benchmarks/pipeline.py --part pipeline --out $OUT \
  --combinations "dense,first_block_cache,radial + first_block_cache,$TS,radial + $TS" > $OUT/pipeline.log 2>&1; tail -8 $OUT/pipeline.log | cut -c1-300
