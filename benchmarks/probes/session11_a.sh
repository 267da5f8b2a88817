# Next H200 call (issue 15): the family benchmark with the interleaved dense twin (families.py now
# alternates an unpatched copy's forwards with the patched model's), and the cost model calibrating
# tile-order forwards without token movement. Two calls: the large families here, the small ones
# (LTX-Video, Mochi, FLUX) with FAMILIES=ltx,mochi,flux.
#   run(carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#       --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl && export PYTHONPATH=/tmp/site:$PWD
#       || exit; FAMILIES=wan,hunyuan_video,cogvideox bash benchmarks/probes/session11_a.sh")
export PYTHONUNBUFFERED=1
timeout 540 python benchmarks/families.py --out $OUT --layers 2 --reps 2 --families ${FAMILIES:-wan,hunyuan_video,cogvideox} \
  > $OUT/families.log 2>&1; grep -c '"variant"' $OUT/families.log; tail -1 $OUT/families.log
