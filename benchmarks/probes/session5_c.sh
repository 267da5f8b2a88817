# device run (session 5, after the review commit): GPU tests
python -m pytest -q tests/test_triton_kernel.py tests/test_triton_compile.py > $OUT/pytest_gpu_h100.log 2>&1; tail -2 $OUT/pytest_gpu_h100.log
