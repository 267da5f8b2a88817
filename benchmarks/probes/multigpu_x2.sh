# Issue 17 on nvidia-h200-x2 (carry .whl): parity and speed of radial under Ulysses-2 against one GPU.
#   run(kind="nvidia-h200-x2", carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile
#       --no-cache-dir --upgrade --target /tmp/site .whl/diffusers*.whl .whl/importlib*.whl .whl/zipp*.whl &&
#       export PYTHONPATH=/tmp/site:$PWD || exit; bash benchmarks/probes/multigpu_x2.sh")
# A single-GPU machine can run the same script with --nproc_per_node 1 (no parity, the 1-GPU times only).
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
timeout 540 python -m torch.distributed.run --standalone --nproc_per_node ${NPROC:-2} benchmarks/multigpu.py --out $OUT \
  > $OUT/multigpu.log 2>&1; tail -8 $OUT/multigpu.log
