# device run (session 6): GPU tests (xformers backend under patch/unpatch, the kernel tests), then
# the attention benchmark with its xformers dense row (no Flex: the H100 file has Flex's rows).
python -m pytest -q -rs tests/test_gpu_xformers.py tests/test_triton_kernel.py tests/test_triton_compile.py > $OUT/pytest_gpu_h200.log 2>&1; tail -3 $OUT/pytest_gpu_h200.log
python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --check --budget-s 330 \
  --cases wan14b_720p,hunyuan_720p,cogvideox5b,hunyuan_natten,wan14b_480p,flux_1024 > $OUT/attention_h200.log 2>&1
tail -12 $OUT/attention_h200.log
