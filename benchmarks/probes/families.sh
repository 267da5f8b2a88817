# Issue 15 on the H200 (carry .whl): every family at two resolutions, dense vs the presets and a full window,
# default patch (cost model) and force_sparse. 2 layers each at real widths; about 5-8 minutes.
#   run(carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#       --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl && export PYTHONPATH=/tmp/site:$PWD
#       || exit; bash benchmarks/probes/families.sh")
export PYTHONUNBUFFERED=1
timeout 560 python benchmarks/families.py --out $OUT --layers 2 --reps 3 > $OUT/families.log 2>&1; tail -15 $OUT/families.log
