"""One rank of tests/test_context_parallel.py: tiny fp32 models on the CPU under diffusers' Ulysses
context parallelism (gloo), each case against the same model and patch in this single process.
Writes {case: max |difference| or the error's text} to ``out``/rank<r>.json."""

from __future__ import annotations

import json
import os
import sys
import traceback

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))


def wan_model():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16,
                                 out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, rope_max_seq_len=32).eval()


def wan_inputs():
    g = torch.Generator().manual_seed(1)
    # 4 x 5 x 9 = 180 video tokens: an even split over 2 ranks (diffusers' sharder needs it).
    return dict(hidden_states=torch.randn(1, 16, 4, 10, 18, generator=g), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 16, 32, generator=g), return_dict=False)


def flux_model():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                  num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                  axes_dims_rope=[4, 4, 8]).eval()


def flux_inputs():
    g = torch.Generator().manual_seed(1)
    H, W = 10, 12  # 120 image tokens, 16 text tokens: both split evenly
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
    return dict(hidden_states=torch.randn(1, H * W, 4, generator=g), encoder_hidden_states=torch.randn(1, 16, 32, generator=g),
                pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([0.5]), img_ids=img_ids,
                txt_ids=torch.arange(16 * 3, dtype=torch.float32).reshape(16, 3) / 48, return_dict=False)


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


def cases():
    import ditaccel
    from diffusers import ContextParallelConfig

    every = ditaccel.Schedule()  # every step and layer sparse
    ulysses = ContextParallelConfig(ulysses_degree=2)
    methods = {"radial": ditaccel.Radial(decay=0.5, block_size=64, sink=True),
               "neighborhood": ditaccel.Neighborhood(window=(3, 3, 5), block_size=64),
               "piecewise": ditaccel.Piecewise(density=0.5, block_size=64)}
    # (Radial on one frame computes every block: it would not show the token order.)
    flux_methods = {"neighborhood": ditaccel.Neighborhood(window=(1, 5, 5), block_size=64),
                    "piecewise": ditaccel.Piecewise(density=0.5, block_size=64)}

    def single(build, inputs, method):
        model = build()
        if method is None:
            return run(model, inputs)
        with ditaccel.patch(model, method, schedule=every):
            return run(model, inputs)

    def parallel(build, inputs, method, order="parallel_first", config=ulysses):
        model = build()
        if order == "parallel_first":
            model.enable_parallelism(config=config)
            handle = ditaccel.patch(model, method, schedule=every) if method is not None else None
        else:
            handle = ditaccel.patch(model, method, schedule=every)
            run(model, inputs)  # a forward first: the layers now hold the sparse twins enable_parallelism meets
            handle.reset_summary()
            model.enable_parallelism(config=config)
        out = run(model, inputs)
        if handle is not None:
            summary = handle.summary()
            assert all(row["sparse_steps"] == [0] for row in summary.rows), summary
            handle.unpatch()
        return out, model

    results = {}

    def case(name, fn):
        try:
            results[name] = float(fn())
        except Exception as error:  # noqa: BLE001  (the test reads the message)
            results[name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()

    case("wan dense", lambda: (parallel(wan_model, wan_inputs(), None)[0] - single(wan_model, wan_inputs(), None)).abs().max())
    for name, method in methods.items():
        case(f"wan {name}", lambda m=method: (parallel(wan_model, wan_inputs(), m)[0] - single(wan_model, wan_inputs(), m)).abs().max())
    case("wan radial, patch first", lambda: (parallel(wan_model, wan_inputs(), methods["radial"], "patch_first")[0]
                                              - single(wan_model, wan_inputs(), methods["radial"])).abs().max())
    for name, method in flux_methods.items():
        case(f"flux {name}", lambda m=method: (parallel(flux_model, flux_inputs(), m)[0] - single(flux_model, flux_inputs(), m)).abs().max())

    def unpatched_is_exact():
        _, model = parallel(wan_model, wan_inputs(), methods["radial"])  # patched, ran, unpatched
        return (run(model, wan_inputs()) - parallel(wan_model, wan_inputs(), None)[0]).abs().max()

    case("wan unpatch", unpatched_is_exact)

    def sparse_is_not_dense():  # the cases above would pass trivially if the method changed nothing
        return (single(wan_model, wan_inputs(), methods["radial"]) - single(wan_model, wan_inputs(), None)).abs().max()

    case("wan radial differs from dense", sparse_is_not_dense)
    case("flux neighborhood differs from dense", lambda: (single(flux_model, flux_inputs(), flux_methods["neighborhood"])
                                                          - single(flux_model, flux_inputs(), None)).abs().max())
    def broadcast_under_parallelism():
        """Radial + Broadcast over three forwards (the second reuses every layer's kept output): the
        reuse decisions come from the step count, the same on every rank."""
        cache = ditaccel.Broadcast(period=2, window=(0.0, 1.0))

        def three(model):
            outs = []
            with ditaccel.patch(model, methods["radial"], schedule=every, cache=cache) as handle:
                for t in (999.0, 998.0, 997.0):
                    outs.append(run(model, {**wan_inputs(), "timestep": torch.tensor([t])}))
                assert any(row["reused_steps"] == [1] for row in handle.summary().rows), handle.summary()
            return torch.stack(outs)

        model = wan_model()
        model.enable_parallelism(config=ulysses)
        return (three(model) - three(wan_model())).abs().max()

    case("wan radial + broadcast", broadcast_under_parallelism)

    def lost_config():
        from diffusers.models.transformers.transformer_wan import WanAttnProcessor

        model = wan_model()
        model.enable_parallelism(config=ulysses)
        model.blocks[1].attn1.set_processor(WanAttnProcessor())  # after enable_parallelism: no config
        with ditaccel.patch(model, methods["radial"], schedule=every):
            run(model, wan_inputs())

    case("wan lost config", lost_config)

    def calibration_fails_on_one_rank():
        """Rank 1's calibration raises: rank 1 reports its own error, rank 0 is told instead of
        waiting in the decision's collective (a hang, before)."""
        from ditaccel.cost_model import CostModel, Decision

        class FailsOnRank1(CostModel):
            def decide(self, shape, measure):
                if dist.get_rank() == 1:
                    raise RuntimeError("calibration ran out of memory (test)")
                return Decision(True, "sparse pays (test)")

        model = wan_model()
        model.enable_parallelism(config=ulysses)
        with ditaccel.patch(model, methods["neighborhood"], schedule=every, cost_model=FailsOnRank1()):
            run(model, wan_inputs())

    case("wan calibration fails on rank 1", calibration_fails_on_one_rank)
    case("wan ring", lambda: parallel(wan_model, wan_inputs(), methods["radial"], config=ContextParallelConfig(ring_degree=2)))
    return results


def main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    if torch.accelerator.device_count() == 0:  # diffusers 0.42.1 divides by it in enable_parallelism
        torch.accelerator.device_count = lambda: 1
    import transformers  # noqa: F401  (diffusers' split hook logs with transformers' warning_once)

    try:
        results = cases()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
