# Session 10, call 1 (issue 15): the per-family "neighborhood" preset (candidate windows' speed at
# every family's real shapes, their quality on the built-in model), then attention.py's static rows
# with the session-9 kernel (partial blocks test only the coordinates they need).
#   run(carry=[".whl", ".lpips"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
#       --upgrade --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl
#       && export PYTHONPATH=/tmp/site:$PWD || exit; bash benchmarks/probes/session10_a.sh")
export DITACCEL_LPIPS_WEIGHTS=$PWD/.lpips/lpips_alex_v0.1.safetensors PYTHONUNBUFFERED=1
timeout 150 python benchmarks/probes/neighborhood_presets.py --out $OUT > $OUT/neighborhood_presets.log 2>&1; grep -c candidate $OUT/neighborhood_presets.log; tail -1 $OUT/neighborhood_presets.log
(time timeout 160 bash benchmarks/eval_tiny_video_neighborhood.sh $OUT/eval --quiet) > $OUT/eval.log 2>&1; tail -4 $OUT/eval.log
(cd $OUT && tar czf eval_tiny_video_neighborhood.tgz --exclude=frames eval && rm -rf eval)
mkdir -p $OUT/att
timeout 200 python benchmarks/attention.py --out $OUT/att --rounds 3 --no-xformers --check --budget-s 140 \
  --cases wan14b_720p,hunyuan_720p,cogvideox5b,flux_1024,hunyuan_natten,wan14b_480p > $OUT/att/attention_h200.log 2>&1
grep '"method"' $OUT/att/attention_h200.log | cut -c1-200
