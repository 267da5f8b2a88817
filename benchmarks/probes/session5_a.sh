# device run (session 5): GPU tests, then the tile-order cases of the attention benchmark
python -m pytest -q tests/test_triton_kernel.py tests/test_triton_compile.py > $OUT/pytest_gpu_h100.log 2>&1; tail -2 $OUT/pytest_gpu_h100.log
python benchmarks/attention.py --out $OUT --check --rounds 3 --cases hunyuan_natten,flux_1024 --tag _i --budget-s 400 > $OUT/attention_h100_i.log 2>&1
tail -5 $OUT/attention_h100_i.log; grep -E '"method"|check' $OUT/attention_h100_i.log
