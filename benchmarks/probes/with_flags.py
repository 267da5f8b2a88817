"""Run a benchmark script with module constants set first, to time a variant in the same call.

    python benchmarks/probes/with_flags.py MODULE.NAME=VALUE [...] -- SCRIPT [ARGS ...]

VALUE is a Python literal. Example (joint attention's text query tiles in canonical order):

    python benchmarks/probes/with_flags.py ditaccel.kernels.block_sparse_triton.TEXT_ROWS_FIRST=False \\
        -- benchmarks/attention.py --cases hunyuan_720p --tag _text_last
"""

from __future__ import annotations

import ast
import importlib
import runpy
import sys
from pathlib import Path


def main() -> None:
    if "--" not in sys.argv:
        raise SystemExit(__doc__)
    sep = sys.argv.index("--")
    for spec in sys.argv[1:sep]:
        name, _, value = spec.partition("=")
        module, _, attr = name.rpartition(".")
        target = importlib.import_module(module)
        if not hasattr(target, attr):
            raise SystemExit(f"{module} has no attribute {attr!r}")
        setattr(target, attr, ast.literal_eval(value))
        print(f"with {module}.{attr} = {getattr(target, attr)!r}", flush=True)
    script, sys.argv = sys.argv[sep + 1], sys.argv[sep + 1:]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
