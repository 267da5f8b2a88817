"""Issue 15, the "neighborhood" preset per family: what each candidate window costs per attention
call at every supported family's real shapes (benchmarks/families.py's grids, heads, head_dim and
text tokens), against dense SDPA in the same process.

The call is timed as the runtime's per-call path makes it: the sparse call on random q, k, v in the
model's token order (text where the family puts it, token movement included) against SDPA on the
same tensors, median of interleaved rounds (ditaccel/cost_model.py's time_pair). Records:
resolved window, stride and tile, video block density, the fraction of computed blocks that are
partial and which coordinates they test, sparse and dense ms, speedup. The quality side of the
choice is `ditaccel eval` on the built-in model (benchmarks/probes/session10_a.sh).

python benchmarks/probes/neighborhood_presets.py --out DIR [--families wan,...] [--candidates a,b] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from families import FAMILIES  # noqa: E402

from ditaccel import Neighborhood  # noqa: E402
from ditaccel.cost_model import time_pair  # noqa: E402
from ditaccel.pipelines import available_adapters  # noqa: E402
from ditaccel.plugins.sparse_attention import SparseAttention  # noqa: E402

CANDIDATES = {
    "preset_stride2": Neighborhood(window=(0.375, 0.75, 0.75), stride=2),
    "tile_0.375_0.75": Neighborhood(window=(0.375, 0.75, 0.75), stride="tile"),
    "tile_0.5_0.75": Neighborhood(window=(0.5, 0.75, 0.75), stride="tile"),
    "tile_0.375_1.0": Neighborhood(window=(0.375, 1.0, 1.0), stride="tile"),
    "tile_0.25_0.5": Neighborhood(window=(0.25, 0.5, 0.5), stride="tile"),
    "tile_0.375_0.5": Neighborhood(window=(0.375, 0.5, 0.5), stride="tile"),
    # The preset's reach with tiles no longer than the grid's sides (the default tile, least padding,
    # can be longer than a side, and the window then takes the whole side): a window-aware tile choice.
    "tile_0.375_0.75_t1x8x16": Neighborhood(window=(0.375, 0.75, 0.75), stride="tile", tile=(1, 8, 16)),
    "tile_0.375_0.75_t2x8x8": Neighborhood(window=(0.375, 0.75, 0.75), stride="tile", tile=(2, 8, 8)),
}
HEADS = {"wan": (40, 128), "hunyuan_video": (24, 128), "cogvideox": (48, 64), "ltx": (32, 64), "mochi": (24, 128),
         "flux": (24, 128)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated names from CANDIDATES")
    ap.add_argument("--smoke", action="store_true", help="CPU, 2 heads x 16, small grids: checks the script")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    positions = {a.family: a.text_position for a in available_adapters()}
    result = dict(gpu=torch.cuda.get_device_name() if cuda else "cpu (smoke)", torch=torch.__version__,
                  date=time.strftime("%Y-%m-%d"), records=[])
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "neighborhood_presets_" + ("h200" if cuda and "H200" in result["gpu"] else "smoke" if args.smoke else "gpu") + ".json")
    for family in args.families.split(","):
        _, resolutions, text_len = FAMILIES[family]
        heads, dim = HEADS[family] if not args.smoke else (2, 16)
        if args.smoke:
            resolutions, text_len = {"smoke": (5, 12, 16) if family != "flux" else (1, 16, 24)}, 8
        position = positions[family]
        for resolution, grid in resolutions.items():
            n = grid[0] * grid[1] * grid[2] + text_len
            q, k, v = (torch.randn(1, n, heads, dim, device=device, dtype=dtype) for _ in range(3))
            arguments = dict(text_len=text_len, text_position=position if text_len else "none")

            def dense():
                return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))

            for name in args.candidates.split(","):
                method = CANDIDATES[name]
                record = dict(family=family, resolution=resolution, grid=list(grid), heads=heads, head_dim=dim,
                              text_tokens=text_len, candidate=name, config=repr(method))
                try:
                    runner = SparseAttention(method, backend="auto" if cuda else "reference")
                    layout = runner.layout(grid, text_len, q.device)
                    video = runner.video_layout(grid)
                    computed = video.kv_counts.sum().item()
                    partial = (video.kv_partial != 0).sum().item()
                    record.update(window=list(method.resolve_window(grid)), stride=list(method.resolve_stride(grid)),
                                  tile=list(method.choose_tile(grid)), block_density=round(video.video_block_density(), 4),
                                  partial_fraction=round(partial / computed, 4) if computed else None,
                                  partial_dims=layout.partial_dims)
                    with torch.no_grad():
                        dense_ms, sparse_ms = time_pair(dense, lambda: runner(q, k, v, grid, **arguments), device=q.device,
                                                        rounds=5 if cuda else 1)
                    record.update(dense_ms=round(dense_ms, 3), sparse_ms=round(sparse_ms, 3), speedup=round(dense_ms / sparse_ms, 3))
                except Exception as error:  # noqa: BLE001  (the record says why)
                    record["error"] = f"{type(error).__name__}: {error}"[:300]
                result["records"].append(record)
                print(json.dumps({k: record.get(k) for k in ("family", "resolution", "candidate", "window", "stride", "tile",
                                                             "block_density", "partial_fraction", "sparse_ms", "dense_ms",
                                                             "speedup", "error")}), flush=True)
            with open(path, "w") as f:
                json.dump(result, f, indent=1)
            del q, k, v
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
