# H200 call 2 of session 12 (issues 12, 15):
# 1. pyramid's overhead piece by piece (probes/pyramid_overhead.py: importance configs, the Triton
#    pooling kernel against the torch means it replaced), then attention.py's pyramid rows at 32 and
#    16 importance samples with the Triton pooling;
# 2. LTX-Video and FLUX family rows again (the rows at 0.973-0.979x): a forward the cost model runs
#    dense no longer reads its timestep (that read made the host wait; the traces of call 1), with
#    the A/A probe first.
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session12_c.sh")
export PYTHONUNBUFFERED=1
timeout 120 python benchmarks/probes/pyramid_overhead.py > $OUT/pyramid_overhead.log 2>&1; grep '^{' $OUT/pyramid_overhead.log | cut -c1-3000
for S in 32 16; do
  timeout 100 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --methods pyramid \
    --cases wan14b_720p,hunyuan_720p --pyramid-samples $S --tag _pyramid_s$S > $OUT/attention_pyramid_s$S.log 2>&1
  grep '"method"' $OUT/attention_pyramid_s$S.log | cut -c1-260
done
timeout 70 python benchmarks/probes/prehook_overhead.py --rounds 50 > $OUT/prehook_overhead.log 2>&1
grep -E '^\{' $OUT/prehook_overhead.log | cut -c1-400
timeout 240 python benchmarks/families.py --out $OUT --layers 2 --reps 2 --families ltx,flux > $OUT/families.log 2>&1
grep -c '"variant"' $OUT/families.log; tail -1 $OUT/families.log
