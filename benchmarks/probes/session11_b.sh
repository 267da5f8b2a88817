# Next H200 call (issue 12): pyramid's importance pass with 16 samples per block against the
# preset's 32, both in one call (each invocation times cuDNN in its own rounds), then the
# neighbourhood preset's reach with explicit tiles (issue 15).
#   run(carry=[".whl"], command="... (as session11_a.sh) ...; bash benchmarks/probes/session11_b.sh")
export PYTHONUNBUFFERED=1
for S in 32 16; do
  timeout 170 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --methods pyramid \
    --cases wan14b_720p,hunyuan_720p --pyramid-samples $S --tag _pyramid_s$S > $OUT/attention_pyramid_s$S.log 2>&1
  grep '"method"' $OUT/attention_pyramid_s$S.log | cut -c1-220
done
# The preset's reach with explicit (1, 8, 16) and (2, 8, 8) tiles against the default tile (a
# window-aware tile choice for stride="tile"), every family.
timeout 150 python benchmarks/probes/neighborhood_presets.py --out $OUT \
  --candidates tile_0.375_0.75,tile_0.375_0.75_t1x8x16,tile_0.375_0.75_t2x8x8 > $OUT/neighborhood_presets.log 2>&1; grep -c candidate $OUT/neighborhood_presets.log
