# H200 call 3 of session 12 (issue 12): pyramid's layout kernels (levels after the sort, LUT by
# prefix sums, pooling with 8 warps) on the GPU: their tests in bf16, the overhead probe, and
# attention.py's pyramid rows at 32 and 16 importance samples.
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session12_d.sh")
export PYTHONUNBUFFERED=1
timeout 110 python -m pytest -q -x tests/test_pyramid_triton.py > $OUT/pytest_pyramid_h200.log 2>&1; tail -3 $OUT/pytest_pyramid_h200.log
timeout 80 python benchmarks/probes/pyramid_overhead.py > $OUT/pyramid_overhead.log 2>&1; grep '^{' $OUT/pyramid_overhead.log | cut -c1-600
for S in 32 16; do
  timeout 80 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --methods pyramid \
    --cases wan14b_720p,hunyuan_720p --pyramid-samples $S --tag _pyramid_s$S > $OUT/attention_pyramid_s$S.log 2>&1
  grep '"method"' $OUT/attention_pyramid_s$S.log | cut -c1-260
done
