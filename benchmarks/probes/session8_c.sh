# Issue 13 on the H200 (carry .whl): the pipeline benchmark, in calls that fit 10 minutes each.
#   call 1: bash benchmarks/probes/session8_c.sh steps
#   call 2: bash benchmarks/probes/session8_c.sh pipeline "dense,radial,broadcast,radial + broadcast"
#   call 3: bash benchmarks/probes/session8_c.sh pipeline "radial + residual_reuse,first_block_cache,radial + first_block_cache"
# (part pipeline measures dense in the same call as the others it compares; the second call's
# speedups need the first's dense: add "dense" there too if the budget allows.)
PART=$1; COMBINATIONS=${2:-}
if [ "$PART" = steps ]; then
  python benchmarks/pipeline.py --part steps --out $OUT > $OUT/pipeline_steps.log 2>&1
else
  python benchmarks/pipeline.py --part pipeline --out $OUT --combinations "$COMBINATIONS" > $OUT/pipeline.log 2>&1
fi
tail -15 $OUT/pipeline*.log
