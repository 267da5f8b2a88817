# Session 9, call 2 (issue 15, partial blocks): partial blocks test only the coordinates the layout
# needs (compile-time PARTIAL_DIMS). Kernel tests on the GPU (masking subset), the tile x
# coordinates probe, attention.py's neighbourhood + radial rows.
#   run(carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#       --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl && export PYTHONPATH=/tmp/site:$PWD
#       || exit; bash benchmarks/probes/session9_b.sh")
export PYTHONUNBUFFERED=1
timeout 80 python -m pytest -q -x -rs tests/test_triton_kernel.py -k "neighborhood or partial or padding or text or ragged" > $OUT/pytest_kernel_h200.log 2>&1; tail -2 $OUT/pytest_kernel_h200.log
timeout 220 python benchmarks/probes/partial_blocks.py --out $OUT --budget-s 170 > $OUT/partial_blocks_h200.log 2>&1; grep -v "^ " $OUT/partial_blocks_h200.log | tail -3
mkdir -p $OUT/att
timeout 230 python benchmarks/attention.py --out $OUT/att --rounds 3 --no-flex --no-xformers --check --budget-s 150 \
  --methods neighborhood_stride1,neighborhood_blocked,radial --cases wan14b_720p,cogvideox5b,hunyuan_720p > $OUT/att/attention_h200.log 2>&1
grep '"method"' $OUT/att/attention_h200.log | cut -c1-300
