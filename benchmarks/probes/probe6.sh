# device probe (session 4): GPU tests, then the box path output through a 5-D descriptor vs row stores (BOX_STORE, commit a675424; reverted)
python -m pytest -q tests/test_triton_kernel.py tests/test_triton_compile.py 2>&1 | tail -2
cd benchmarks/probes
for c in "hunyuan_natten neighborhood_blocked" "hunyuan_720p neighborhood_blocked" "flux_1024 neighborhood_blocked" "wan14b_480p neighborhood_blocked"; do
  python canonical_probe.py $c 2>&1 | grep -v Warn | grep -v "old canon\|n64\|tuned:\|s2 "
done
