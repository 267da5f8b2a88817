# device probe (session 4): ncu of the grid-box kernel vs the rows kernel, NATTEN's case
cd benchmarks/probes
for w in rows box; do
  python ncu_box.py $w 2>&1 | tail -1
  timeout 200 ncu --clock-control none --kernel-name regex:_block_sparse_fwd --launch-skip 3 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    python ncu_box.py $w > $OUT/ncu_natten_$w.txt 2>&1
  grep -E "Duration|Throughput|Hit Rate|Bandwidth|Stall|Warp Cycles|Issued|Eligible" $OUT/ncu_natten_$w.txt | head -40
done
