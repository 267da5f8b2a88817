import os, sys, torch, triton, triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from ditaccel.kernels.block_sparse_triton import _online_softmax  # noqa: E402  (the kernel's own step)

@triton.jit
def _probe(Qd, Kd, Vd, Od, n_tiles_h, n_tiles_w, n_blocks, H, qk_scale,
           D: tl.constexpr, TT: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, BOX: tl.constexpr, STAGES: tl.constexpr):
    BM: tl.constexpr = TT * TH * TW
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    h = bh % H
    col = h * D
    if BOX:
        tw_ = pid % n_tiles_w
        th_ = (pid // n_tiles_w) % n_tiles_h
        tt_ = pid // (n_tiles_w * n_tiles_h)
        q = Qd.load([0, tt_ * TT, th_ * TH, tw_ * TW, col]).reshape(BM, D)
    else:
        q = Qd.load([pid * BM, col])
    m_i = tl.full([BM], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, D], dtype=tl.float32)
    for j in tl.range(0, n_blocks, num_stages=STAGES):
        if BOX:
            w = j % n_tiles_w
            hh = (j // n_tiles_w) % n_tiles_h
            t = j // (n_tiles_w * n_tiles_h)
            k = Kd.load([0, t * TT, hh * TH, w * TW, col]).reshape(BM, D)
            v = Vd.load([0, t * TT, hh * TH, w * TW, col]).reshape(BM, D)
        else:
            k = Kd.load([j * BM, col])
            v = Vd.load([j * BM, col])
        m_i, l_i, acc = _online_softmax(tl.dot(q, tl.trans(k)), v, m_i, l_i, acc, qk_scale)
    out = acc / l_i[:, None]
    if BOX:
        Od.store([0, tt_ * TT, th_ * TH, tw_ * TW, col], out.to(Od.dtype).reshape(1, TT, TH, TW, D))
    else:
        Od.store([pid * BM, col], out.to(Od.dtype))

def run(grid, tile, H, D, dtype, dev, bench=False):
    T, Hg, Wg = grid; tt, th, tw = tile
    nt = [-(-grid[i] // tile[i]) for i in range(3)]
    N = T * Hg * Wg
    q, k, v = (torch.randn(1, N, H, D, device=dev, dtype=dtype) for _ in range(3))
    o = torch.empty_like(q)
    C = H * D
    def d5(x):
        return TensorDescriptor(x, [1, T, Hg, Wg, C], [N * C, Hg * Wg * C, Wg * C, C, 1], [1, tt, th, tw, D])
    # canonical gathered copies
    pad = torch.zeros(1, nt[0]*tt, nt[1]*th, nt[2]*tw, H, D, device=dev, dtype=dtype)
    def canon(x):
        p = pad.clone(); p[:, :T, :Hg, :Wg] = x.view(1, T, Hg, Wg, H, D)
        p = p.view(1, nt[0], tt, nt[1], th, nt[2], tw, H, D).permute(0, 1, 3, 5, 2, 4, 6, 7, 8).reshape(1, -1, H, D)
        return p.contiguous()
    qc, kc, vc = canon(q), canon(k), canon(v)
    oc = torch.empty_like(qc)
    L = qc.shape[1]
    def d2(x):
        return TensorDescriptor(x, [L, C], [C, 1], [tt*th*tw, D])
    nb = nt[0]*nt[1]*nt[2]
    scale = D ** -0.5 * 1.4426950408889634
    g = (nb, H)
    kw = dict(D=D, TT=tt, TH=th, TW=tw, num_warps=8 if dev == "cuda" else 4, num_stages=3 if dev == "cuda" else 1)
    f_box = lambda: _probe[g](d5(q), d5(k), d5(v), d5(o), nt[1], nt[2], nb, H, scale, BOX=True, STAGES=3, **kw)
    f_row = lambda: _probe[g](d2(qc), d2(kc), d2(vc), d2(oc), nt[1], nt[2], nb, H, scale, BOX=False, STAGES=3, **kw)
    f_box(); f_row()
    # compare: box output in raster, row output canonical -> raster
    oc_r = oc.view(1, nt[0], nt[1], nt[2], tt, th, tw, H, D).permute(0, 1, 4, 2, 5, 3, 6, 7, 8).reshape(1, nt[0]*tt, nt[1]*th, nt[2]*tw, H, D)[:, :T, :Hg, :Wg].reshape(1, N, H, D)
    err = ((o.float() - oc_r.float()).norm() / oc_r.float().norm()).item()
    res = {"grid": grid, "tile": tile, "err": err}
    if bench:
        from triton.testing import do_bench
        res["box_ms"] = do_bench(f_box, warmup=50, rep=300)
        res["rows_ms"] = do_bench(f_row, warmup=50, rep=300)
        flops = 4 * (nb * 128) ** 2 * D * H
        res["box_tflops"] = flops / res["box_ms"] / 1e9
        res["rows_tflops"] = flops / res["rows_ms"] / 1e9
    print(res, flush=True)

if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        run((3, 5, 6), (1, 4, 4), 2, 64, torch.float16, "cpu")
        run((2, 6, 9), (2, 2, 4), 1, 64, torch.float32, "cpu")
    else:
        for grid, tile in [((21, 45, 80), (1, 8, 16)), ((21, 45, 80), (2, 8, 8)), ((30, 48, 80), (2, 8, 8)), ((21, 48, 80), (1, 8, 16)),((16,64,64),(1,1,128))]:
            try:
                run(grid, tile, 24, 128, torch.bfloat16, "cuda", bench=True)
            except Exception as e:
                print("FAIL", grid, tile, repr(e)[:2000], flush=True)
