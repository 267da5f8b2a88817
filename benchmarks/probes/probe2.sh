# device probe (session 4): kernel variants on NATTEN's shape and Wan 720p, compiled IR kept
export TRITON_CACHE_DIR=/tmp/tcache
cd benchmarks/probes
python variant_probe.py hunyuan_natten all 2>&1 | grep -v Warning
python variant_probe.py hunyuan_natten neighborhood_blocked 2>&1 | grep -v Warning
python variant_probe.py wan14b_720p all 2>&1 | grep -v Warning
cd /tmp/tcache && find . -name "*.ttgir" -o -name "*.ptx" -o -name "*.json" | tar czf $OUT/ir.tar.gz -T -
