"""Piecewise, top-k and pyramid attention (reference backends) against their definitions, each
rebuilt here with plain torch ops and loops over blocks (nothing from the modules under test)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from ditaccel.kernels import (
    piecewise_attention,
    piecewise_selection,
    piecewise_statistics,
    pyramid_attention,
    pyramid_levels,
    topk_attention,
)
from ditaccel.kernels.pyramid import BLOCK_FRACTIONS, score_importance


def random_qkv(batch=2, seq=45, heads=2, dim=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, seq, heads, dim, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]


def sdpa(q, k, v, mask=None):
    """q, k, v [B, N, H, D]; mask bool broadcastable to [B, H, N, N]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def block_slices(n, bs):
    return [slice(s, min(s + bs, n)) for s in range(0, n, bs)]


def token_mask(block_mask, n, bs):
    """bool [., ., blocks, blocks] -> [., ., n, n]."""
    idx = torch.arange(n) // bs
    return block_mask[:, :, idx][..., idx]


def closed_form_piecewise(q, k, v, selected, bs, order, scale=None):
    """The numerator / denominator of issue 12 term by term, in fp64, one (batch, head) at a time."""
    B, N, H, D = q.shape
    tau = D**-0.5 if scale is None else scale
    q, k, v = (x.double() for x in (q, k, v))
    out = torch.empty(B, N, H, D, dtype=torch.float64)
    row_block = torch.arange(N) // bs
    for b in range(B):
        for h in range(H):
            qi, ks, vs = q[b, :, h], k[b, :, h], v[b, :, h]
            hsum = sum((ks[J] - ks[J].mean(0)).T @ vs[J] for J in block_slices(N, bs))
            num = torch.zeros(N, D, dtype=torch.float64)
            den = torch.zeros(N, dtype=torch.float64)
            for j, J in enumerate(block_slices(N, bs)):
                sel = selected[min(b, selected.shape[0] - 1), min(h, selected.shape[1] - 1), row_block, j]  # [N]
                n_j = J.stop - J.start
                e = torch.exp(tau * qi @ ks[J].T)  # naive: fine in fp64 for the logits used here
                a = torch.exp(tau * qi @ ks[J].mean(0))
                approx_num = a[:, None] * vs[J].sum(0)
                if order == 1:
                    approx_num = approx_num + a[:, None] * tau * n_j * (qi @ (hsum / N))
                num += torch.where(sel[:, None], e @ vs[J], approx_num)
                den += torch.where(sel, e.sum(1), n_j * a)
            out[b, :, h] = num / den[:, None]
    return out


# --------------------------------------------------------------------------------------------- piecewise


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_piecewise_all_selected_is_dense(dtype, rtol):
    q, k, v = random_qkv(seq=45, dtype=dtype)
    nb = math.ceil(45 / 16)
    dense = sdpa(q, k, v)
    every = torch.ones(1, 1, nb, nb, dtype=torch.bool)
    for order in (0, 1):
        out = piecewise_attention(q, k, v, selected=every, block_size=16, order=order)
        assert out.dtype == dtype
        torch.testing.assert_close(out, dense, rtol=rtol, atol=rtol)
    torch.testing.assert_close(piecewise_attention(q, k, v, density=1.0, block_size=16), dense, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("n,bs", [(45, 16), (64, 16), (37, 8)])
def test_piecewise_matches_closed_form(order, n, bs):
    q, k, v = random_qkv(seq=n, dtype=torch.float64, seed=n + order)
    nb = math.ceil(n / bs)
    g = torch.Generator().manual_seed(1)
    selected = torch.rand(2, 2, nb, nb, generator=g) < 0.4
    selected[0, 0, 0] = False  # a query block with every key block approximated
    selected[1, 1, 1] = True
    expected = closed_form_piecewise(q, k, v, selected, bs, order)
    out = piecewise_attention(q, k, v, selected=selected, block_size=bs, order=order)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # fp32 inputs, fp32 accumulation; a selection broadcast over the batch
    out32 = piecewise_attention(q.float(), k.float(), v.float(), selected=selected[:1], block_size=bs, order=order)
    expected_b = closed_form_piecewise(q, k, v, selected[:1], bs, order)
    torch.testing.assert_close(out32.double(), expected_b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("order", [0, 1])
def test_piecewise_large_logits_stay_finite(order):
    """Logits beyond fp32's exp range (~88): the one max per row must cover exact and summary logits."""
    q, k, v = random_qkv(seq=45, dtype=torch.float64, seed=3)
    q = q * 40
    tau = 16**-0.5
    assert (tau * torch.einsum("bnhd,bmhd->bhnm", q, k)).max() > 100
    bs, nb = 16, 3
    selected = torch.zeros(2, 2, nb, nb, dtype=torch.bool)
    selected[:, :, :, 1] = True
    selected[0, 1, 2] = False  # only summaries
    expected = closed_form_piecewise(q, k, v, selected, bs, order)
    out = piecewise_attention(q.float(), k.float(), v.float(), selected=selected, block_size=bs, order=order)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def test_piecewise_statistics_definition():
    _, k, v = random_qkv(batch=1, seq=21, heads=1, dim=4, dtype=torch.float64)
    stats = piecewise_statistics(k, v, 8)
    for j, J in enumerate(block_slices(21, 8)):
        kj, vj = k[0, J, 0], v[0, J, 0]
        assert stats.counts[j] == J.stop - J.start
        torch.testing.assert_close(stats.kbar[0, 0, j], kj.mean(0))
        torch.testing.assert_close(stats.vsum[0, 0, j], vj.sum(0))
        torch.testing.assert_close(stats.h[0, 0, j], sum(torch.outer(kj[t] - kj.mean(0), vj[t]) for t in range(len(kj))))


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0, 0.01])
def test_piecewise_selection_is_topk_of_score(density):
    n, bs = 75, 8
    q, k, v = random_qkv(seq=n, dtype=torch.float64, seed=5)
    nb = math.ceil(n / bs)
    tau = 16**-0.5
    keep = max(1, math.floor(density * nb + 1e-9))
    mask = piecewise_selection(q, k, v, density=density, block_size=bs)
    assert mask.shape == (2, 2, nb, nb) and mask.dtype == torch.bool
    for b in range(2):
        for h in range(2):
            blocks = block_slices(n, bs)
            qbar = torch.stack([q[b, J, h].mean(0) for J in blocks])
            kbar = torch.stack([k[b, J, h].mean(0) for J in blocks])
            norms = torch.stack([torch.linalg.norm((k[b, J, h] - k[b, J, h].mean(0)).T @ v[b, J, h]) for J in blocks])
            score = tau * qbar @ kbar.T + torch.log(norms + 1e-5)
            expected = torch.zeros(nb, nb, dtype=torch.bool)
            expected[torch.arange(nb)[:, None], score.topk(keep, dim=1).indices] = True
            assert torch.equal(mask[b, h], expected)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan"), "0.2"])
def test_density_validation(density):
    q, k, v = random_qkv(seq=32)
    with pytest.raises(ValueError, match="density"):
        piecewise_selection(q, k, v, density=density, block_size=16)
    with pytest.raises(ValueError, match="density"):
        piecewise_attention(q, k, v, density=density, block_size=16)


def test_topk_equals_masked_sdpa():
    n, bs = 45, 8
    q, k, v = random_qkv(seq=n, seed=7)
    selected = piecewise_selection(q, k, v, density=0.34, block_size=bs)
    assert selected.sum(-1).eq(2).all()
    expected = sdpa(q, k, v, token_mask(selected, n, bs))
    torch.testing.assert_close(topk_attention(q, k, v, density=0.34, block_size=bs), expected, rtol=1e-5, atol=1e-5)
    # a given mask, broadcast over heads, with a query block that selects nothing: zero output there
    g = torch.Generator().manual_seed(2)
    nb = math.ceil(n / bs)
    mask = torch.rand(2, 1, nb, nb, generator=g) < 0.5
    mask[:, :, :, 0] = True
    mask[0, 0, 2] = False
    out = topk_attention(q, k, v, selected=mask, block_size=bs)
    expected = sdpa(q, k, v, token_mask(mask, n, bs))
    rows = slice(2 * bs, 3 * bs)
    assert torch.isfinite(out).all() and out[0, rows].abs().max() == 0
    expected[0, rows] = 0
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------- pyramid


def explicit_pyramid(q, k, v, levels, bs, scale=None):
    """Each query block attends the groups of l tokens of every key block at level l != 0, with
    logit tau q.mean(k) + log(len(group)); fp64, loops over blocks and groups."""
    B, N, H, D = q.shape
    tau = D**-0.5 if scale is None else scale
    q, k, v = (x.double() for x in (q, k, v))
    out = torch.zeros(B, N, H, D, dtype=torch.float64)
    blocks = block_slices(N, bs)
    for b in range(B):
        for h in range(H):
            lv = levels[min(b, levels.shape[0] - 1), min(h, levels.shape[1] - 1)]
            for i, I in enumerate(blocks):
                keys, values, bias = [], [], []
                for j, J in enumerate(blocks):
                    level = int(lv[i, j])
                    if level == 0:
                        continue
                    for start in range(J.start, J.stop, level):
                        group = slice(start, min(start + level, J.stop))
                        keys.append(k[b, group, h].mean(0))
                        values.append(v[b, group, h].mean(0))
                        bias.append(math.log(group.stop - group.start))
                if not keys:
                    continue  # nothing attended: zero output
                logits = tau * q[b, I, h] @ torch.stack(keys).T + torch.tensor(bias, dtype=torch.float64)
                out[b, I, h] = torch.softmax(logits, dim=-1) @ torch.stack(values)
    return out


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_pyramid_level_one_is_dense(dtype, rtol):
    q, k, v = random_qkv(seq=45, dtype=dtype)
    levels = torch.ones(1, 1, 3, 3, dtype=torch.int64)
    out = pyramid_attention(q, k, v, levels=levels, block_size=16)
    assert out.dtype == dtype
    torch.testing.assert_close(out, sdpa(q, k, v), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("n,bs", [(45, 12), (64, 16), (29, 8)])
def test_pyramid_mixed_levels_match_explicit_pooling(n, bs):
    q, k, v = random_qkv(seq=n, dtype=torch.float64, seed=n)
    nb = math.ceil(n / bs)
    g = torch.Generator().manual_seed(n)
    levels = torch.tensor([0, 1, 2, 4, 8])[torch.randint(0, 5, (2, 2, nb, nb), generator=g)]
    levels[0, 0, 1] = 0  # a query block that attends nothing
    levels[1, 0, 0] = 8
    levels[1, 1, :, -1] = 4  # the short last block pooled by a level that does not divide it
    out = pyramid_attention(q, k, v, levels=levels.int(), block_size=bs)
    rows = slice(bs, 2 * bs)
    assert torch.isfinite(out).all() and out[0, rows, 0].abs().max() == 0
    torch.testing.assert_close(out, explicit_pyramid(q, k, v, levels, bs), rtol=1e-10, atol=1e-10)
    out32 = pyramid_attention(q.float(), k.float(), v.float(), levels=levels[:, :1], block_size=bs)
    torch.testing.assert_close(out32.double(), explicit_pyramid(q, k, v, levels[:, :1], bs), rtol=1e-4, atol=1e-5)


def test_pyramid_all_skipped_is_zero():
    q, k, v = random_qkv(seq=32)
    out = pyramid_attention(q, k, v, levels=torch.zeros(1, 1, 2, 2, dtype=torch.int8), block_size=16)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("mode", ["mass", "fraction"])
def test_pyramid_levels_values_and_shape(mode):
    q, k, _ = random_qkv(seq=75, seed=11)
    levels = pyramid_levels(q, k, block_size=8, mode=mode)
    assert levels.shape == (2, 2, 10, 10) and not levels.dtype.is_floating_point
    assert torch.isin(levels, torch.tensor([0, 1, 2, 4, 8], dtype=levels.dtype)).all()
    assert (levels == 1).sum(-1).min() >= 1  # every query block computes something exactly
    levels_rand = pyramid_levels(q, k, block_size=8, mode=mode, generator=torch.Generator().manual_seed(0))
    assert levels_rand.shape == levels.shape
    out = pyramid_attention(q, k, k, levels=levels, block_size=8)
    assert torch.isfinite(out).all()


def test_pyramid_levels_fraction_preset():
    q, k, _ = random_qkv(seq=20 * 8, seed=12)
    levels = pyramid_levels(q, k, block_size=8, mode="fraction")
    per_level = {lv: (levels == lv).sum(-1) for lv in (1, 2, 4, 8, 0)}
    fractions = {**dict(zip((1, 2, 4, 8), BLOCK_FRACTIONS)), 0: 1 - sum(BLOCK_FRACTIONS)}
    for lv, count in per_level.items():
        assert (count == round(fractions[lv] * 20)).all(), (lv, count)
    custom = pyramid_levels(q, k, block_size=8, mode="fraction", fractions=(0.25, 0.25, 0.25, 0.25))
    for lv in (1, 2, 4, 8):
        assert ((custom == lv).sum(-1) == 5).all()


def test_pyramid_levels_mass_dominant_block_is_exact():
    B, H, D, bs, nb = 1, 2, 16, 8, 12
    g = torch.Generator().manual_seed(4)
    u = torch.randn(D, generator=g)
    u = u / u.norm()
    q = 2 * u + 0.1 * torch.randn(B, nb * bs, H, D, generator=g)
    k = 0.1 * torch.randn(B, nb * bs, H, D, generator=g)
    k[:, 3 * bs : 4 * bs] += 12 * u  # key block 3 holds nearly all of every row's attention mass
    levels = pyramid_levels(q, k, block_size=bs, mode="mass")
    assert (levels[..., 3] == 1).all()
    others = torch.cat([levels[..., :3], levels[..., 4:]], dim=-1)
    assert (others == 0).all()  # the tail beyond 80% of the mass is skipped
    # without a dominant block the mass spreads: several blocks per row are exact
    flat = pyramid_levels(0.1 * torch.randn(B, nb * bs, H, D, generator=g), 0.1 * torch.randn(B, nb * bs, H, D, generator=g),
                          block_size=bs, mode="mass")
    assert ((flat == 1).sum(-1) > 1).all()


def test_pyramid_score_importance_is_the_softmax_of_piecewise_score():
    """importance="score", computed here from its definition: softmax over key blocks of tau *
    qbar_I . kbar_J + log(||H_J||_F + 1e-5), a short last block averaging the tokens it has."""
    q, k, v = (x.double() for x in random_qkv(seq=75, seed=21))
    bs, tau, nb = 16, 0.3, 5
    got = score_importance(q, k, v, bs, tau)
    want = torch.empty_like(got)
    for b, h, i in itertools.product(range(2), range(2), range(nb)):
        qbar = q[b, i * bs : (i + 1) * bs, h].mean(0)
        scores = []
        for j in range(nb):
            kj, vj = k[b, j * bs : (j + 1) * bs, h], v[b, j * bs : (j + 1) * bs, h]
            kbar = kj.mean(0)
            hj = (kj - kbar).T @ vj
            scores.append(tau * qbar @ kbar + torch.log(torch.linalg.norm(hj) + 1e-5))
        want[b, h, i] = torch.softmax(torch.stack(scores), 0)
    torch.testing.assert_close(got, want)
    # the levels follow that ranking: in fraction mode the top block of each row is exact
    levels = pyramid_levels(q, k, v, block_size=bs, mode="fraction", scale=tau, importance="score")
    assert (levels.gather(-1, want.argmax(-1, keepdim=True)) == 1).all()


# --------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_parameter():
    q, k, v = random_qkv(seq=32)
    nb = 2
    with pytest.raises(ValueError, match="q, k, v"):
        piecewise_attention(q, k[:, :16], v, density=0.5, block_size=16)
    with pytest.raises(ValueError, match="density"):
        piecewise_attention(q, k, v, density=0.5, selected=torch.ones(1, 1, nb, nb, dtype=torch.bool), block_size=16)
    with pytest.raises(ValueError, match="density"):
        topk_attention(q, k, v, block_size=16)
    with pytest.raises(ValueError, match="selected"):
        piecewise_attention(q, k, v, selected=torch.ones(1, 1, nb, nb + 1, dtype=torch.bool), block_size=16)
    with pytest.raises(ValueError, match="selected"):
        piecewise_attention(q, k, v, selected=torch.ones(3, 1, nb, nb, dtype=torch.bool), block_size=16)
    with pytest.raises(ValueError, match="selected"):
        topk_attention(q, k, v, selected=torch.ones(1, 1, nb, nb), block_size=16)
    with pytest.raises(ValueError, match="order"):
        piecewise_attention(q, k, v, density=0.5, block_size=16, order=2)
    with pytest.raises(ValueError, match="block_size"):
        piecewise_attention(q, k, v, density=0.5, block_size=0)
    with pytest.raises(ValueError, match="backend"):
        piecewise_attention(q, k, v, density=0.5, block_size=16, backend="cuda")
    with pytest.raises(ValueError, match=r"levels.*\[0, 1, 2, 4, 8\]"):
        pyramid_attention(q, k, v, levels=torch.full((1, 1, nb, nb), 3), block_size=16)
    with pytest.raises(ValueError, match="levels"):
        pyramid_attention(q, k, v, levels=torch.ones(1, 1, nb, nb), block_size=16)  # float
    with pytest.raises(ValueError, match="levels"):
        pyramid_attention(q, k, v, levels=torch.ones(1, 4, nb, nb, dtype=torch.int64), block_size=16)
    with pytest.raises(ValueError, match="q, k, v"):
        pyramid_attention(q, k, v[..., :8], levels=torch.ones(1, 1, nb, nb, dtype=torch.int64), block_size=16)
    with pytest.raises(ValueError, match="mode"):
        pyramid_levels(q, k, block_size=16, mode="energy")
    with pytest.raises(ValueError, match="thresholds"):
        pyramid_levels(q, k, block_size=16, thresholds=(0.5, 0.4, 0.6, 0.8))
    with pytest.raises(ValueError, match="fractions"):
        pyramid_levels(q, k, block_size=16, mode="fraction", fractions=(0.5, 0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="q and k"):
        pyramid_levels(q, k[:, :16], block_size=16)
    with pytest.raises(ValueError, match=r"importance.*'sampled', 'score'"):
        pyramid_levels(q, k, v, block_size=16, importance="oracle")
    with pytest.raises(ValueError, match="importance='score' needs v"):
        pyramid_levels(q, k, block_size=16, importance="score")
    with pytest.raises(ValueError, match="samples"):
        pyramid_levels(q, k, v, block_size=16, importance="score", samples=4)
