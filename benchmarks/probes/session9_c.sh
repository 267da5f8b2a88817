# Session 9, call 3 (issue 15): the family benchmark (default patch vs dense, force_sparse), then
# attention.py's CogVideoX (head_dim 64) and HunyuanVideo neighbourhood rows after the text fixes.
#   run(carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#       --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl && export PYTHONPATH=/tmp/site:$PWD
#       || exit; bash benchmarks/probes/session9_c.sh")
export PYTHONUNBUFFERED=1
timeout 60 python -m pytest -q -x -rs tests/test_triton_kernel.py -k "graph_break or text" > $OUT/pytest_kernel_h200.log 2>&1; tail -1 $OUT/pytest_kernel_h200.log
timeout 385 python benchmarks/families.py --out $OUT --layers 2 --reps 3 > $OUT/families.log 2>&1; grep -c '"variant"' $OUT/families.log; tail -2 $OUT/families.log
mkdir -p $OUT/att
timeout 125 python benchmarks/attention.py --out $OUT/att --rounds 3 --no-flex --no-xformers --check --budget-s 40 \
  --methods neighborhood_stride1,neighborhood_blocked --cases cogvideox5b,hunyuan_720p > $OUT/att/attention_h200.log 2>&1
grep '"method"' $OUT/att/attention_h200.log | cut -c1-250
