# Session 9, call 1 (issue 15, partial blocks): the kernel tests on the GPU, the tile x flag probe,
# and attention.py's neighbourhood + radial rows with per-coordinate partial flags.
#   run(carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#       --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl && export PYTHONPATH=/tmp/site:$PWD
#       || exit; bash benchmarks/probes/session9_a.sh")
export PYTHONUNBUFFERED=1
timeout 110 python -m pytest -q -x -rs tests/test_triton_kernel.py > $OUT/pytest_kernel_h200.log 2>&1; tail -2 $OUT/pytest_kernel_h200.log
timeout 230 python benchmarks/probes/partial_blocks.py --out $OUT --budget-s 190 > $OUT/partial_blocks_h200.log 2>&1; tail -4 $OUT/partial_blocks_h200.log
mkdir -p $OUT/att
timeout 230 python benchmarks/attention.py --out $OUT/att --rounds 3 --no-flex --no-xformers --check --budget-s 150 \
  --methods neighborhood_stride1,neighborhood_blocked,radial --cases wan14b_720p,cogvideox5b,hunyuan_720p > $OUT/att/attention_h200.log 2>&1
tail -8 $OUT/att/attention_h200.log
