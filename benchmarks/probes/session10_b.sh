# Session 10, call 2 (issue 15): the family benchmark again (every family at two resolutions: the
# radial and the new "neighborhood" preset and a full window, default patch and force_sparse, dense
# re-timed next to each variant), then the per-family preset probe's remaining families.
#   run(carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#       --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl && export PYTHONPATH=/tmp/site:$PWD
#       || exit; bash benchmarks/probes/session10_b.sh")
export PYTHONUNBUFFERED=1
timeout 420 python benchmarks/families.py --out $OUT --layers 2 --reps 2 > $OUT/families.log 2>&1; grep -c '"variant"' $OUT/families.log; tail -1 $OUT/families.log
timeout 110 python benchmarks/probes/neighborhood_presets.py --out $OUT --families ltx,mochi,flux > $OUT/neighborhood_presets.log 2>&1; grep -c candidate $OUT/neighborhood_presets.log
