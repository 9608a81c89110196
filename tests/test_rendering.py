"""Volume rendering: hand-computed weights, background, and the packed route against the dense."""

from __future__ import annotations

import math

import pytest
import torch

from nerf.rendering import composite_dense, composite_packed, recomposite, weights_dense, weights_packed

LN2 = math.log(2.0)


def test_weights_dense_hand_computed() -> None:
    # alpha = 0, 1/2, 3/4, 1/2; transmittance (exclusive) = 1, 1, 1/2, 1/8.
    sigmas = torch.tensor([[0.0, LN2, 2 * LN2, LN2]])
    weights = weights_dense(sigmas, torch.ones(1, 4))
    assert weights[0].tolist() == pytest.approx([0.0, 0.5, 0.375, 0.0625], abs=1e-6)
    # Opacity = 1 - final transmittance = 1 - 1/16.
    assert float(weights.sum()) == pytest.approx(0.9375, abs=1e-6)


def test_weights_dense_first_weight_is_first_alpha_and_deltas_scale() -> None:
    sigmas = torch.tensor([[2.0, 1.0]])
    deltas = torch.tensor([[0.5, 0.25]])
    w = weights_dense(sigmas, deltas)
    a1, a2 = 1 - math.exp(-1.0), 1 - math.exp(-0.25)
    assert w[0].tolist() == pytest.approx([a1, (1 - a1) * a2], abs=1e-6)
    # Only sigma * delta matters.
    assert torch.allclose(w, weights_dense(sigmas * deltas, torch.ones_like(deltas)))


def test_weights_sum_to_opacity_at_most_one_and_opaque_first_sample_takes_all() -> None:
    gen = torch.Generator().manual_seed(0)
    sigmas = torch.rand(64, 32, generator=gen) * 20
    deltas = torch.rand(64, 32, generator=gen) * 0.2
    w = weights_dense(sigmas, deltas)
    assert torch.all(w >= 0)
    # Sum of weights = 1 - exp(-total optical depth).
    expected = 1 - torch.exp(-(sigmas * deltas).sum(-1))
    assert torch.allclose(w.sum(-1), expected, atol=1e-5)
    assert torch.all(w.sum(-1) <= 1 + 1e-6)
    opaque = weights_dense(torch.tensor([[1e4, 5.0, 5.0]]), torch.ones(1, 3))
    assert opaque[0].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-7)


def test_a_very_dense_sample_keeps_the_optical_depth_before_it() -> None:
    # Thin samples, then one far denser: its transmittance is exp(-(sum of the thin ones)),
    # opacity stays at most 1, and an infinite density takes what light is left, no NaN.
    thin = torch.full((1, 50), 1e-3)
    for dense in (1e5, float("inf")):
        sigmas = torch.cat([thin, torch.tensor([[dense, 1.0]])], dim=1)
        w = weights_dense(sigmas, torch.ones_like(sigmas))
        assert torch.isfinite(w).all()
        assert float(w[0, 50]) == pytest.approx(math.exp(-0.05), rel=1e-6)
        assert float(w.sum()) <= 1.0 + 1e-6 and float(w[0, 51]) == 0.0


def test_a_uniform_medium_s_opacity_depends_on_its_length_not_how_it_is_cut() -> None:
    # Density 0.2 over 6 units in intervals longer than one unit: opacity 1 - exp(-1.2), both routes.
    deltas = torch.tensor([2.5, 0.5, 3.0])
    sigmas = torch.full((3,), 0.2)
    expected = 1 - math.exp(-1.2)
    assert float(weights_dense(sigmas[None], deltas[None]).sum()) == pytest.approx(expected, rel=1e-6)
    packed = weights_packed(sigmas, deltas, torch.zeros(3, dtype=torch.int64))
    assert float(packed.sum()) == pytest.approx(expected, rel=1e-6)


def test_composite_dense_background_hand_case() -> None:
    weights = torch.tensor([[0.25, 0.25], [0.0, 0.0]])
    rgbs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]])
    t = torch.tensor([[2.0, 4.0], [2.0, 4.0]])
    bg = torch.tensor([0.2, 0.4, 0.8])
    out = composite_dense(weights, rgbs, t, bg)
    assert out.opacity.tolist() == pytest.approx([0.5, 0.0])
    # 0.25 red + 0.25 green + (1 - 0.5) * bg.
    assert out.rgb[0].tolist() == pytest.approx([0.25 + 0.1, 0.25 + 0.2, 0.4])
    assert out.rgb[1].tolist() == pytest.approx(bg.tolist())  # empty ray: the background
    assert out.depth.tolist() == pytest.approx([0.25 * 2 + 0.25 * 4, 0.0])
    assert out.coarse_rgb is None


def _random_samples(counts: list[int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n = sum(counts)
    sigmas = torch.rand(n, generator=gen) * 10
    deltas = torch.rand(n, generator=gen) * 0.3 + 0.01
    rgbs = torch.rand(n, 3, generator=gen)
    t = torch.cumsum(deltas, 0)  # any per-sample depths will do
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return sigmas, deltas, rgbs, t, ray_indices


BG = torch.tensor([0.3, 0.6, 0.9])


def test_packed_equals_dense_when_every_ray_has_the_same_count() -> None:
    n_rays, s = 6, 5
    sigmas, deltas, rgbs, t, idx = _random_samples([s] * n_rays)
    w_packed = weights_packed(sigmas, deltas, idx)
    w_dense = weights_dense(sigmas.reshape(n_rays, s), deltas.reshape(n_rays, s))
    assert torch.allclose(w_packed, w_dense.reshape(-1), atol=1e-6)
    packed = composite_packed(w_packed, rgbs, t, idx, n_rays, BG)
    dense = composite_dense(w_dense, rgbs.reshape(n_rays, s, 3), t.reshape(n_rays, s), BG)
    for a, b in zip(packed[:3], dense[:3]):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("counts", [[3, 0, 5, 1, 0], [0, 4, 0, 0, 2, 7]])
def test_packed_equals_per_ray_dense_with_ragged_and_empty_rays(counts) -> None:
    sigmas, deltas, rgbs, t, idx = _random_samples(counts, seed=len(counts))
    n_rays = len(counts)
    w = weights_packed(sigmas, deltas, idx)
    out = composite_packed(w, rgbs, t, idx, n_rays, BG)
    start = 0
    for ray, c in enumerate(counts):
        sl = slice(start, start + c)
        start += c
        if c == 0:
            assert out.opacity[ray] == 0.0 and out.depth[ray] == 0.0
            assert torch.equal(out.rgb[ray], BG)
            continue
        w_ray = weights_dense(sigmas[sl][None], deltas[sl][None])
        assert torch.allclose(w[sl], w_ray[0], atol=1e-6)
        ref = composite_dense(w_ray, rgbs[sl][None], t[sl][None], BG)
        assert torch.allclose(out.rgb[ray], ref.rgb[0], atol=1e-5)
        assert torch.allclose(out.depth[ray], ref.depth[0], atol=1e-5)
        assert torch.allclose(out.opacity[ray], ref.opacity[0], atol=1e-6)


def test_packed_with_no_samples_at_all_is_all_background() -> None:
    empty = torch.zeros(0)
    idx = torch.zeros(0, dtype=torch.int64)
    w = weights_packed(empty, empty, idx)
    out = composite_packed(w, torch.zeros(0, 3), empty, idx, 3, BG)
    assert torch.equal(out.opacity, torch.zeros(3))
    assert torch.equal(out.rgb, BG.expand(3, 3))


def test_packed_is_exact_after_a_ray_of_huge_optical_depth() -> None:
    # Ray 0 accumulates an optical depth of 1e4; ray 1's own small optical depths must not be
    # swallowed by the running (global) sum.
    sigmas = torch.cat([torch.full((100,), 100.0), torch.tensor([0.1, 0.2, 0.3])])
    deltas = torch.cat([torch.ones(100), torch.full((3,), 0.1)])
    idx = torch.cat([torch.zeros(100, dtype=torch.int64), torch.ones(3, dtype=torch.int64)])
    w = weights_packed(sigmas, deltas, idx)
    ref = weights_dense(sigmas[None, 100:], deltas[None, 100:])[0]
    assert torch.allclose(w[100:], ref, rtol=1e-5, atol=1e-9)
    assert float(w[0]) == pytest.approx(1.0)


def test_packed_samples_behind_an_optically_thick_one_are_hidden_as_in_dense() -> None:
    # Optical depth 30 lets exp(-30) ~ 1e-13 through: far below the cap, so exact as dense.
    sigmas, deltas = torch.tensor([30.0, 1.0, 2.0]), torch.ones(3)
    w = weights_packed(sigmas, deltas, torch.zeros(3, dtype=torch.int64))
    ref = weights_dense(sigmas[None], deltas[None])[0]
    assert torch.allclose(w, ref, rtol=1e-5, atol=1e-12)
    assert float(w[1:].sum()) < 1e-12


def test_gradients_flow_through_packed_route_and_match_dense() -> None:
    n_rays, s = 4, 6
    sigmas, deltas, rgbs, t, idx = _random_samples([s] * n_rays, seed=3)
    sigmas.mul_(0.3)  # keep rays semi-transparent so every sample gets gradient
    grads = []
    for packed in (True, False):
        sig = sigmas.clone().requires_grad_(True)
        col = rgbs.clone().requires_grad_(True)
        if packed:
            out = composite_packed(weights_packed(sig, deltas, idx), col, t, idx, n_rays, BG)
        else:
            w = weights_dense(sig.reshape(n_rays, s), deltas.reshape(n_rays, s))
            out = composite_dense(w, col.reshape(n_rays, s, 3), t.reshape(n_rays, s), BG)
        loss = (out.rgb - 0.5).square().sum() + out.depth.sum()
        loss.backward()
        grads.append((sig.grad, col.grad))
    (gs_p, gc_p), (gs_d, gc_d) = grads
    assert torch.isfinite(gs_p).all() and torch.isfinite(gc_p).all()
    assert torch.all(gs_p != 0) and torch.all(gc_p.abs().sum(-1) > 0)
    assert torch.allclose(gs_p, gs_d, atol=1e-5)
    assert torch.allclose(gc_p, gc_d, atol=1e-6)


def test_recomposite_hand_case() -> None:
    rgb = torch.tensor([[0.35, 0.45, 0.4], [0.2, 0.4, 0.8]])
    opacity = torch.tensor([0.5, 0.0])
    new = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = recomposite(rgb, opacity, torch.tensor([0.2, 0.4, 0.8]), new)
    # Half covered: the old background's half out, the new one's half in; empty: the new one.
    assert out[0].tolist() == pytest.approx([0.35 - 0.1 + 0.5, 0.45 - 0.2, 0.4 - 0.4])
    assert out[1].tolist() == pytest.approx([0.0, 0.0, 0.0])


def test_recomposite_equals_rendering_on_the_new_background() -> None:
    # Moving a render onto per-ray backgrounds equals rendering on them (dense and packed).
    gen = torch.Generator().manual_seed(3)
    sigmas, deltas = torch.rand(5, 7, generator=gen) * 2, torch.rand(5, 7, generator=gen) * 0.5
    rgbs, t = torch.rand(5, 7, 3, generator=gen), torch.linspace(2, 6, 7).expand(5, 7)
    old, new = torch.tensor([1.0, 1.0, 1.0]), torch.rand(5, 3, generator=gen)
    weights = weights_dense(sigmas, deltas)
    on_old = composite_dense(weights, rgbs, t, old)
    expected = composite_dense(weights, rgbs, t, new)
    assert torch.allclose(recomposite(on_old.rgb, on_old.opacity, old, new), expected.rgb, atol=1e-6)
    ray_indices = torch.arange(5).repeat_interleave(7)
    packed = composite_packed(weights.reshape(-1), rgbs.reshape(-1, 3), t.reshape(-1), ray_indices, 5, old)
    assert torch.allclose(recomposite(packed.rgb, packed.opacity, old, new), expected.rgb, atol=1e-6)


def test_packed_rays_after_a_diverging_density_are_unaffected() -> None:
    # Ray 0 has one sample of huge (or infinite) density; ray 1, after it in the batch, must
    # get exactly the weights it gets alone (a batch-wide sum must not swamp its part).
    sigmas1 = torch.tensor([10.0, 10.0, 10.0])
    deltas1 = torch.full((3,), 0.1)
    alone = weights_packed(sigmas1, deltas1, torch.zeros(3, dtype=torch.long))
    for dense in (1e17, float("inf")):
        sigmas = torch.cat([torch.tensor([dense]), sigmas1])
        deltas = torch.cat([torch.tensor([0.1]), deltas1])
        w = weights_packed(sigmas, deltas, torch.tensor([0, 1, 1, 1]))
        assert float(w[0]) == 1.0
        torch.testing.assert_close(w[1:], alone, rtol=1e-6, atol=0.0)
