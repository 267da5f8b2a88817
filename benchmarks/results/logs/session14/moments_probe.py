import sys, math, torch, json
sys.path.insert(0, '/work/main/benchmarks'); sys.path.insert(0, '/work/main')
import fidelity as F_
from ditaccel.plugins.dynamic import dynamic_tiling
from ditaccel.kernels.pyramid import pyramid_levels, pyramid_attention, _assign_levels, _block_importance, score_importance, MASS_THRESHOLDS, MIN_FULL_FRACTION
BS = 128
torch.manual_seed(0)

def blocks(x):  # [B,N,H,D] -> [B,H,nb,BS,D]
    B,N,H,D = x.shape
    return x.transpose(1,2).reshape(B,H,N//BS,BS,D)

def moments(q, k, c):
    tau = q.shape[-1]**-0.5
    qb, kb = blocks(q.double()), blocks(k.double())
    qm, km = qb.mean(3), kb.mean(3)
    vq, vk = qb.var(3, unbiased=False), kb.var(3, unbiased=False)
    mu = tau * qm @ km.transpose(-1,-2)
    s2 = tau**2 * ((qm**2) @ vk.transpose(-1,-2) + vq @ (km**2).transpose(-1,-2) + vq @ vk.transpose(-1,-2))
    if c == 'lse':
        logit = mu + s2/2
    else:
        logit = mu + c * s2.sqrt()
    return torch.softmax(logit, -1).float()

def oracle(q, k):
    tau = q.shape[-1]**-0.5
    B,N,H,D = q.shape
    p = torch.softmax(tau * q.transpose(1,2) @ k.transpose(1,2).transpose(-1,-2), -1)  # B H N N
    nb = N//BS
    m = p.reshape(B,H,nb,BS,nb,BS).sum(-1).mean(3)
    return m / m.sum(-1, keepdim=True)

def frac(levels):
    lv = levels.double(); return float(torch.where(lv>0, 1/lv.clamp(min=1), 0.).mean())

def run(q, k, v, name):
    ref = F_.dense_attention(q, k, v)
    ests = {'sampled32': _block_importance(q, k, BS, 32, None, None, use_triton=False),
                        'score': score_importance(q, k, v, BS, None, use_triton=False), 'oracle': oracle(q, k)}
    for c in ('lse', 2.0, 3.0):
        ests[f'mom{c}'] = moments(q, k, c)
    out = {}
    for en, w in ests.items():
        row = []
        for s in (0.6, 1.0, 1.2):
            th = tuple(min(1.0, t*s) for t in MASS_THRESHOLDS)
            lv = _assign_levels(w, 'mass', th, MIN_FULL_FRACTION, None, use_triton=False)
            o = pyramid_attention(q, k, v, levels=lv, block_size=BS, backend='reference')
            row.append((s, round(frac(lv),3), round(F_.relative_l2(o, ref),4)))
        out[en] = row
        print(name, en, row, flush=True)
    return out

res = {}
grid=(8,16,32)
q,k,v = F_.synthetic_inputs(grid, 4, 64, 2.0, 0, 0.5)
t = dynamic_tiling(grid, BS, 'tiled'); q,k,v = (t.to_canonical(x) for x in (q,k,v))
res['synthetic'] = run(q,k,v,'synthetic')
cap = F_.captured_inputs([2,10,18],[1,3],20,4.0,0)
cap = {key: tuple(x[:, :, :2] for x in val) for key, val in cap.items()}
for (st,ly),(q,k,v) in sorted(cap.items()):
    t = dynamic_tiling((16,16,16), BS, "tiled"); q,k,v = (t.to_canonical(x) for x in (q,k,v))
    res[f"cap{st}_{ly}"] = run(q,k,v,f"cap{st}_{ly}")
json.dump(res, open("/tmp/s14/moments.json","w"))
