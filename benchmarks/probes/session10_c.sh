# Session 10, call 3 (issue 15): LTX and FLUX family rows again (the short forwards whose dense
# decisions read 0.92-0.98x in call 2), then attention.py's static rows for the other cases (call 1
# measured wan14b_720p and hunyuan_720p radial before its time limit).
#   run(carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#       --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl && export PYTHONPATH=/tmp/site:$PWD
#       || exit; bash benchmarks/probes/session10_c.sh")
export PYTHONUNBUFFERED=1
mkdir -p $OUT/fam $OUT/att
timeout 90 python benchmarks/families.py --out $OUT/fam --layers 2 --reps 2 --families ltx,flux > $OUT/fam/families.log 2>&1; grep -c '"variant"' $OUT/fam/families.log
timeout 400 python benchmarks/attention.py --out $OUT/att --rounds 3 --no-xformers --check --budget-s 300 \
  --cases hunyuan_720p,cogvideox5b,flux_1024,hunyuan_natten,wan14b_480p > $OUT/att/attention_h200.log 2>&1
grep '"method"' $OUT/att/attention_h200.log | cut -c1-200
