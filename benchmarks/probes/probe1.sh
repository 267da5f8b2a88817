# device probe: 5-D TMA boxes vs gathered rows (dense), then ncu on the radial layouts
cd benchmarks/probes
python box_tma_probe.py 2>&1 | tail -20
for c in "hunyuan_720p radial" "hunyuan_720p all" "wan14b_720p radial"; do
  set -- $c
  python ncu_radial.py $1 $2 2>&1 | tail -2
  timeout 150 ncu --clock-control none --kernel-name regex:_block_sparse_fwd --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy python ncu_radial.py $1 $2 > $OUT/ncu_$1_$2.txt 2>&1
  grep -E "Throughput|Hit Rate|Duration|Bandwidth|Busy|ms blocks" $OUT/ncu_$1_$2.txt | head -30
done
