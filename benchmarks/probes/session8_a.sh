# Issue 12 on the H200, one call (carry .ext for the external kernels; .whl for diffusers):
#   run(command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site
#       .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;
#       bash benchmarks/probes/session8_a.sh", carry=[".whl", ".ext"])   (session8_b: carry .whl and .lpips)
# 1. the dynamic methods' kernel tests compiled, bf16 included; 2. their attention rows (whole call,
# overheads, kernel, cuDNN in the same run; bf16 check against the reference); 3. PISA's and PSA's own
# kernels at the same shapes (benchmarks/external_kernels.py, their code from .ext, never committed).
# Each part under its own time limit, the numbers first, so that one slow part cannot take the others' results.
export PYTHONUNBUFFERED=1
timeout 270 python benchmarks/attention.py --out $OUT --rounds 3 --no-flex --no-xformers --check --methods piecewise,pyramid,topk \
  --cases wan14b_720p,hunyuan_720p --tag _dynamic > $OUT/attention_dynamic_h200.log 2>&1; tail -12 $OUT/attention_dynamic_h200.log
PYTHONPATH=.ext:$PYTHONPATH timeout 150 python benchmarks/external_kernels.py --out $OUT --check > $OUT/external_kernels_h200.log 2>&1; tail -12 $OUT/external_kernels_h200.log
timeout 150 python -m pytest -q -rs -x tests/test_piecewise_triton.py tests/test_pyramid_triton.py > $OUT/pytest_dynamic_h200.log 2>&1; tail -3 $OUT/pytest_dynamic_h200.log
