# device probe (session 4): old vs new kernel on canonical tensors with kv_len; box vs gather paths
cd benchmarks/probes
python canonical_probe.py hunyuan_720p neighborhood_blocked 2>&1 | grep -v Warn
python canonical_probe.py hunyuan_720p radial 2>&1 | grep -v Warn
python canonical_probe.py hunyuan_natten neighborhood_blocked 2>&1 | grep -v Warn
