# device probe (session 4): GPU tests, then box vs gather vs canonical after the compile-time tile counts
python -m pytest -q tests/test_triton_kernel.py tests/test_triton_compile.py 2>&1 | tail -2
cd benchmarks/probes
python canonical_probe.py hunyuan_natten neighborhood_blocked 2>&1 | grep -v Warn | grep -v "old canon\|n64\|tuned:"
python canonical_probe.py hunyuan_720p neighborhood_blocked 2>&1 | grep -v Warn | grep -v "old canon\|n64\|tuned:"
python canonical_probe.py flux_1024 neighborhood_blocked 2>&1 | grep -v Warn | grep -v "old canon\|n64\|tuned:"
