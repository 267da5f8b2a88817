"""Compile the block-sparse kernel for Hopper (sm_90) without a GPU and print what the compiled
code contains (JSON). Run in a process without TRITON_INTERPRET (tests/test_triton_compile.py)."""

from __future__ import annotations

import json
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import mangle_type
from triton.tools.tensor_descriptor import TensorDescriptor

from ditaccel.kernels import block_sparse_triton as bst


def compile_config(D=128, BM=128, BN=128, warps=8, stages=3, partial_dims=0b1111, has_kv_len=False, mode=1, ragged=False,
                   text=False, tile=(1, 8, 16), dtype=torch.bfloat16, text_first=None, mask_k=0):
    """mode: 0 pointer rows, 1 descriptor rows, 2 grid boxes (5-D descriptors). text_first: the text
    query tiles started first (default: with text; the gather path has it without HAS_TEXT). mask_k: the
    dot mask's columns (0: the element-wise box test)."""
    fn = bst._block_sparse_fwd
    B, N, H = 1, 75776, 40

    def desc(rows):
        return TensorDescriptor(torch.empty(16, 16, dtype=dtype), [B * N, H * D], [H * D, 1], [rows, D])

    def box():
        return TensorDescriptor(torch.empty(16, 16, dtype=dtype), [B, 21, 45, 80, H * D], [N * H * D, 3600 * H * D, 80 * H * D, H * D, 1],
                                [1, *tile, D])

    ptr = torch.empty(1, dtype=dtype)
    i32, i8 = torch.empty(1, dtype=torch.int32), torch.empty(1, dtype=torch.int8)
    if mode == 2:
        vals = dict(Q=desc(BM), K=box(), V=box(), O=ptr)
    elif mode == 1:
        vals = dict(Q=desc(BM), K=desc(BN), V=desc(BN), O=desc(BM))
    else:
        vals = dict(Q=ptr, K=ptr, V=ptr, O=ptr)
    text_tma = text and mode > 0
    vals.update(O_ptr=ptr, OT_ptr=ptr, QT=desc(BM) if text_tma else ptr, KT=desc(BN) if text_tma else ptr, VT=desc(BN) if text_tma else ptr)
    for t in ("v", "o", "t", "to"):
        vals.update({f"stride_{t}b": N * H * D, f"stride_{t}n": H * D, f"stride_{t}h": D})
    vals.update(video_row0=0, video_rows=N, video_len=N - 100 if ragged else N, text_row0=N, text_rows=N + 512, text_len=500,
                grid_t=21, grid_h=45, grid_w=80, kv_counts=i32, kv_counts_video=i32, kv_indices=i32, kv_partial=i8, q_lo=i32, q_hi=i32,
                k_coord=i32, mask_values=i32, mask_onehot=torch.empty(1, dtype=torch.bfloat16), mask_cols=i32, kv_len=i32, qk_scale=0.1, num_heads=H, num_groups=1, num_q_blocks=N // 128, video_blocks=N // 128,
                lut_width=200, text_q_blocks=4, SEQ_BUCKET=131072)
    const = dict(HEAD_DIM=D, LAYOUT_BLOCK=128, BLOCK_M=BM, BLOCK_N=BN, NUM_STAGES=stages, PARTIAL_DIMS=partial_dims,
                 HAS_KV_LEN=has_kv_len, VIDEO_CAN_CROSS=ragged or has_kv_len, MODE=mode, VIDEO_RAGGED=ragged, VIDEO_CLIP=mode == 0, VIDEO_STORE_MASKED=ragged,
                 HAS_TEXT=text, TEXT_TMA=text_tma, TEXT_CLIP=text and not text_tma, TT=tile[0], TH=tile[1], TW=tile[2], NT_H=-(-45 // tile[1]), NT_W=-(-80 // tile[2]),
                 WARP_SPECIALIZE=False, TEXT_ROWS_FIRST=text if text_first is None else text_first, MASK_K=mask_k, DOT_MASK=True)
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in const:
            sig[name] = "constexpr"
            continue
        v = vals[name]
        sig[name] = mangle_type(v)
        if isinstance(v, torch.Tensor) or (isinstance(v, int) and v % 16 == 0):
            attrs[(i,)] = [["tt.divisibility", 16]]
    k = triton.compile(ASTSource(fn, sig, const, attrs), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=warps, num_stages=stages))
    ptx = k.asm["ptx"]
    return dict(shared=k.metadata.shared, wgmma=ptx.count("wgmma.mma_async"), tma_loads=ptx.count("cp.async.bulk.tensor"),
                local_memory=ptx.count("ld.local") + ptx.count("st.local"))


if __name__ == "__main__":
    cases = [dict(), dict(has_kv_len=True), dict(partial_dims=0), dict(partial_dims=0b1100), dict(partial_dims=0b1110, D=64, warps=4, mode=2, tile=(2, 8, 8)), dict(D=64, warps=4), dict(BN=64), dict(mode=0),
             dict(ragged=True), dict(ragged=True, mode=0), dict(ragged=True, D=64, warps=4), dict(mode=2), dict(mode=2, text=True),
             dict(mode=2, tile=(2, 8, 8), D=64, warps=4, text=True, has_kv_len=True), dict(text=True, ragged=True),
             dict(mode=0, text=True), dict(text_first=True),
             dict(partial_dims=0b1110, D=64, warps=4, mode=2, tile=(2, 8, 8), mask_k=32),
             dict(D=64, warps=4, text=True, has_kv_len=True, mask_k=32), dict(partial_dims=0b1100, stages=2, mask_k=32)]
    json.dump([dict(cfg, **compile_config(**cfg)) for cfg in cases], sys.stdout)
