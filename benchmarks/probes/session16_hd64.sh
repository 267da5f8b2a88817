# Prepared in session 15 (issue 15, head_dim 64), not run: session 16's dot mask (session16_a.sh) answered it. Where CogVideoX-5B's masked
# blocks spend their time. Timing of masked vs whole (flags cleared) first, then ncu on each.
#   run(carry=[wheels], command="... (as session13_a.sh) ...; bash benchmarks/probes/session16_hd64.sh")
export PYTHONUNBUFFERED=1
for m in stride1 blocked; do
  for w in masked whole; do
    timeout 60 python benchmarks/probes/ncu_hd64.py $m $w 2>&1 | tail -1
    timeout 120 ncu --clock-control none --kernel-name regex:_block_sparse_fwd --launch-skip 3 --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section InstructionStats \
      python benchmarks/probes/ncu_hd64.py $m $w > $OUT/ncu_hd64_${m}_${w}.txt 2>&1
    grep -E "Duration|Issue Slots Busy|Executed Ipc|Stall|Pipe" $OUT/ncu_hd64_${m}_${w}.txt | head -20
  done
done
