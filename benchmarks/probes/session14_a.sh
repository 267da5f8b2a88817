# H200 call 1 of session 14 (issue 12):
# 1. top-k's exact rate against the footprint of the key blocks it reads (probes/topk_l2_probe.py):
#    the method's own selection, one shared selection, a band, random subsets; then Nsight Compute
#    on HunyuanVideo 720p's real and shared selections (L2 hit rate, DRAM throughput);
# 2. pyramid's Wan preset end to end (eval_tiny_video_pyramid_wan_preset.sh): mass + sampled
#    against fraction + score at equal compute, frames deleted (the device returns few files).
#   run(carry=[wheels, .lpips], command="... (as session13_a.sh) ...; bash benchmarks/probes/session14_a.sh")
export PYTHONUNBUFFERED=1
timeout 150 python benchmarks/probes/topk_l2_probe.py > $OUT/topk_l2_probe.log 2>&1
cut -c1-330 $OUT/topk_l2_probe.log | grep -v Warning | tail -12
if command -v ncu >/dev/null; then
  for V in real shared; do
    timeout 100 ncu --clock-control none --kernel-name regex:_piecewise_fwd --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis \
      python benchmarks/probes/topk_l2_probe.py --ncu hunyuan_720p $V > $OUT/ncu_topk_hunyuan_$V.txt 2>&1
    echo "== ncu hunyuan $V"; grep -E "Duration|DRAM Throughput|L2 Hit Rate|L2 Cache Throughput|Memory Throughput|Compute \(SM\)" $OUT/ncu_topk_hunyuan_$V.txt | head -8
  done
else
  echo "no ncu"
fi
S=pyramid_wan_preset
(time timeout 300 bash benchmarks/eval_tiny_video_$S.sh $OUT/eval_tiny_video_$S --quiet) > $OUT/eval_$S.log 2>&1
rm -rf $OUT/eval_tiny_video_$S/frames
tail -4 $OUT/eval_$S.log | cut -c1-200
