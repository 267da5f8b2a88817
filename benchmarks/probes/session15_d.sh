# H200 call 4 of session 15 (issue 15, head_dim 64; PREFETCH_COORDS was removed after it: slower): partial blocks' key coordinates loaded with K and V
# at the top of each key iteration (PREFETCH_COORDS) against inside the masked branch, CogVideoX-5B.
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session15_d.sh")
export PYTHONUNBUFFERED=1
for pre in False True; do
  timeout 75 python benchmarks/probes/with_flags.py ditaccel.kernels.block_sparse_triton.PREFETCH_COORDS=$pre -- \
    benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --cases cogvideox5b \
    --methods neighborhood_stride1,neighborhood_blocked --tag _cog_prefetch_$pre > $OUT/attention_cog_prefetch_$pre.log 2>&1
  grep -o '"method": "[a-z_0-9]*".*"ours_ms": [0-9.]*, "kernel_canonical_ms": [0-9.]*' $OUT/attention_cog_prefetch_$pre.log
done
