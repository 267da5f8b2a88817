# Scratch benchmark (not part of the change; deleted after the device run).
import json, math, os, sys, time, traceback
import torch, triton
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from ditaccel.kernels import piecewise_triton as pt
from ditaccel.kernels.piecewise import piecewise_attention, topk_attention, piecewise_selection

OUT = os.environ.get("OUT", "/tmp")
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
T0 = time.time()


def save():
    with open(os.path.join(OUT, f"bench_{MODE}.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res)[-3000:], flush=True)


def bench(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=200)


def section(name, fn):
    t = time.time()
    try:
        res[name] = fn()
    except Exception as e:
        res[name] = {"error": repr(e)[:2000], "tb": traceback.format_exc()[-2000:]}
    res[name + "_wall_s"] = round(time.time() - t, 1)
    save()


MODE = sys.argv[1] if len(sys.argv) > 1 else "all"
B, H, N, D, bs = 1, 40, 75600, 128, 64
dens = 0.15
nb = -(-N // bs)
keep = max(1, math.floor(dens * nb + 1e-9))
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (torch.randn(B, N, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
tau = D**-0.5


def correctness():
    out = {}
    N2, H2 = 4000, 4
    q2, k2, v2 = (torch.randn(1, N2, H2, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    sel = piecewise_selection(q2, k2, v2, density=0.15, block_size=64)
    for order in (0, 1, None):
        kw = dict(selected=sel, block_size=64)
        f = (lambda b, **a: topk_attention(q2, k2, v2, backend=b, **a)) if order is None else (
            lambda b, **a: piecewise_attention(q2, k2, v2, order=order, backend=b, **a))
        o = f("triton", **kw).double()
        r = piecewise_attention(q2.double(), k2.double(), v2.double(), order=order, **kw) if order is not None else topk_attention(q2.double(), k2.double(), v2.double(), **kw)
        out[str(order)] = float((o - r).norm() / r.norm())
        # density path: selection agreement and error
        od = f("triton", density=0.15, block_size=64).double()
        out[f"{order}_density"] = float((od - r).norm() / r.norm())
    ms = pt.triton_piecewise_selection(q2, k2, v2, density=0.15, block_size=64)
    out["selection_agreement"] = float((ms == sel).float().mean())
    out["selection_rows_equal"] = float((ms == sel).all(-1).float().mean())
    return out


def dense():
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    out = {}
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        out["cudnn_ms"] = bench(lambda: F.scaled_dot_product_attention(qt, kt, vt))
    out["cudnn_tflops"] = 4 * N * N * D * H / out["cudnn_ms"] * 1e-9
    return out


def stats():
    out = {}
    out["stats_h_ms"] = bench(lambda: pt.piecewise_stats_fwd(q, k, v, bs, True))
    out["stats_noh_ms"] = bench(lambda: pt.piecewise_stats_fwd(q, k, v, bs, False))
    st = pt.piecewise_stats_fwd(q, k, v, bs, True)
    pt.STATS_PRECISION = "ieee"
    qf, kf, vf = q.float(), k.float(), v.float()
    st_ieee = pt.piecewise_stats_fwd(qf, kf, vf, bs, True)
    out["stats_h_fp32in_tf32x3_ms"] = None
    pt.STATS_PRECISION = "tf32x3"
    out["stats_h_fp32in_tf32x3_ms"] = bench(lambda: pt.piecewise_stats_fwd(qf, kf, vf, bs, True))
    del qf, kf, vf
    out["hnorm_rel_split_vs_ieee"] = float(((st[2] - st_ieee[2]).abs() / st_ieee[2]).max())
    out["h_rel_split_vs_ieee"] = float((st[5] - st_ieee[5]).norm() / st_ieee[5].norm())
    out["kbar_maxabs_vs_ieee"] = float((st[1] - st_ieee[1]).abs().max())
    qbar, kbar, hnorm = st[:3]
    out["select_ms"] = bench(lambda: pt.select_blocks(qbar, kbar, hnorm, tau, keep))
    score = torch.baddbmm(torch.log(hnorm + 1e-5)[:, None, :], qbar, kbar.transpose(1, 2), alpha=tau)
    out["score_ms"] = bench(lambda: torch.baddbmm(torch.log(hnorm + 1e-5)[:, None, :], qbar, kbar.transpose(1, 2), alpha=tau))
    out["select_kernel_ms"] = bench(lambda: pt.select_top_blocks_fwd(score, keep))
    lut, sel = pt.select_top_blocks_fwd(score, keep)
    top = score.topk(keep, dim=-1).indices
    ref = torch.zeros_like(sel).scatter_(-1, top, 1)
    out["select_vs_topk_agree"] = float((ref == sel).float().mean())
    out["lut_sorted"] = bool((lut[..., 1:] > lut[..., :-1]).all())
    out["lut_matches_map"] = bool(sel.gather(-1, lut.long()).bool().all())
    return out


def full():
    out = {}
    for name, fn in [
        ("piecewise1", lambda: piecewise_attention(q, k, v, density=dens, block_size=bs, order=1, backend="triton")),
        ("piecewise0", lambda: piecewise_attention(q, k, v, density=dens, block_size=bs, order=0, backend="triton")),
        ("topk", lambda: topk_attention(q, k, v, density=dens, block_size=bs, backend="triton")),
    ]:
        t = time.time()
        fn()
        torch.cuda.synchronize()
        out[name + "_first_call_s"] = time.time() - t
        out[name + "_ms"] = bench(fn)
        bc = getattr(pt._piecewise_fwd_tuned, "best_config", None)
        out[name + "_best"] = str(bc)
    return out


def kernels():
    out = {}
    st = pt.piecewise_stats_fwd(q, k, v, bs, True)
    qbar, kbar, hnorm, kbar_s, vbar_s, h = st
    lut, sel = pt.select_blocks(qbar, kbar, hnorm, tau, keep)
    ht = (h * (tau / N)).to(q.dtype)
    flops_exact = 4 * N * keep * bs * D * H
    for cfg in pt.AUTOTUNE_CONFIGS:
        c = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        c.pop("NUM_STAGES")
        for tma in (True, False):
            if tma and c["BLOCK_N"] > bs:
                continue
            key = f"BN{c['BLOCK_N']}_BS{c['BLOCK_S']}_w{c['num_warps']}_s{c['num_stages']}_tma{int(tma)}"
            try:
                tk = bench(lambda: pt.piecewise_attention_fwd(q, k, v, lut, None, None, None, None, None, None, None, None, tau, bs, keep, config=c, use_tma=tma))
                tp = bench(lambda: pt.piecewise_attention_fwd(q, k, v, lut, None, sel, kbar_s, vbar_s, ht, None, None, None, tau, bs, keep, config=c, use_tma=tma))
                out[key] = {"topk_ms": round(tk, 3), "piecewise1_ms": round(tp, 3), "exact_tflops": round(flops_exact / tk * 1e-9, 1)}
            except Exception as e:
                out[key] = {"error": repr(e)[:300]}
            res["kernels_partial"] = out
            save()
    return out


def stats_c():
    out = {}
    out["stats_h_ms"] = bench(lambda: pt.piecewise_stats_fwd(q, k, v, bs, True))
    out["stats_noh_ms"] = bench(lambda: pt.piecewise_stats_fwd(q, k, v, bs, False))
    st = pt.piecewise_stats_fwd(q, k, v, bs, True)
    qbar, kbar, hnorm = st[:3]
    out["select_ms"] = bench(lambda: pt.select_blocks(qbar, kbar, hnorm, tau, keep))
    score = torch.baddbmm(torch.log(hnorm + 1e-5)[:, None, :], qbar, kbar.transpose(1, 2), alpha=tau)
    out["select_kernel_ms"] = bench(lambda: pt.select_top_blocks_fwd(score, keep))
    lut, sel = pt.select_top_blocks_fwd(score, keep)
    top = score.topk(keep, dim=-1).indices
    ref = torch.zeros_like(sel).scatter_(-1, top, 1)
    out["select_vs_topk_agree"] = float((ref == sel).float().mean())
    out["lut_sorted"] = bool((lut[..., 1:] > lut[..., :-1]).all())
    save()
    H2 = 8
    qf, kf, vf = (x[:, :, :H2].float() for x in (q, k, v))
    pt.STATS_PRECISION = "ieee"
    st_ieee = pt.piecewise_stats_fwd(qf, kf, vf, bs, True)
    pt.STATS_PRECISION = "tf32x3"
    st_x3 = pt.piecewise_stats_fwd(qf, kf, vf, bs, True)
    st_b = pt.piecewise_stats_fwd(q[:, :, :H2], k[:, :, :H2], v[:, :, :H2], bs, True)
    for name, s2 in (("split", st_b), ("tf32x3", st_x3)):
        out[f"hnorm_rel_{name}_vs_ieee"] = float(((s2[2] - st_ieee[2]).abs() / st_ieee[2]).max())
        out[f"h_rel_{name}_vs_ieee"] = float((s2[5] - st_ieee[5]).norm() / st_ieee[5].norm())
    return out


def kernels_c():
    out = {}
    st = pt.piecewise_stats_fwd(q, k, v, bs, True)
    qbar, kbar, hnorm, kbar_s, vbar_s, h = st
    lut, sel = pt.select_blocks(qbar, kbar, hnorm, tau, keep)
    ht = (h * (tau / N)).to(q.dtype)
    for bsum in (64, 32):
        c = dict(BLOCK_N=64, BLOCK_S=bsum, num_warps=4, num_stages=3)
        for name, extra in (("topk", (None, None, None, None)), ("order0", (sel, kbar_s, vbar_s, None)), ("order1", (sel, kbar_s, vbar_s, ht))):
            if name == "topk" and bsum != 64:
                continue
            out[f"{name}_BS{bsum}_ms"] = bench(lambda: pt.piecewise_attention_fwd(q, k, v, lut, None, *extra, None, None, None, tau, bs, keep, config=c, use_tma=True))
            save()
    info = []
    for dev, cache in pt._piecewise_fwd.device_caches.items():
        for key, kern in cache[0].items():
            try:
                info.append({"shared": kern.metadata.shared, "regs": kern.n_regs, "spills": kern.n_spills, "warps": kern.metadata.num_warps, "key": str(key)[-300:]})
            except Exception as e:
                info.append({"error": repr(e)[:200]})
    out["compiled"] = info
    return out


if MODE == "c":
    section("stats", stats_c)
    section("kernels", kernels_c)
if MODE in ("all", "a"):
    section("correctness", correctness)
    section("dense", dense)
    section("stats", stats)
    section("full", full)
if MODE in ("all", "b"):
    section("kernels", kernels)
res["total_s"] = time.time() - T0
save()
