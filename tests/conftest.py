import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Triton kernels run in Triton's interpreter on machines without a GPU. Triton reads the variable
# when it defines a kernel (its own tl.* helpers included), so it must be set before anything
# imports Triton.
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))
