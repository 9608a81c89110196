"""Packed volume rendering as one Triton kernel each way, for CUDA
(``model.fast.render_kernel: triton``).

The PyTorch path (:func:`nerf.rendering.weights_packed` then
:func:`nerf.rendering.composite_packed`) takes about thirty tensor operations forward and as
many backward, each a kernel launch on a GPU, where fast's training step is bound by
launches. Here one program per ray walks its samples in blocks, with the formulas of
:mod:`nerf.rendering`:

    forward:   T_i = exp(-sum_{j<i} tau_j),  w_i = T_i (1 - exp(-tau_i)),  tau_i = sigma_i delta_i
               rgb = sum w_i c_i + (1 - O) bg,  O = sum w_i,  depth = sum w_i t_i
    backward:  with u_i = g_rgb . (c_i - bg) + g_O + g_depth t_i, the gradient a weight passes on,
               dL/dc_i = w_i g_rgb
               dL/dsigma_i = delta_i (T_{i+1} u_i - sum_{k>i} w_k u_k)

(a later weight w_k = T_k (1 - exp(-tau_k)) falls by w_k for each unit of tau_i, i < k). The
backward is one pass per ray: the sum of w_k u_k over the whole ray comes from the forward's
outputs (sum w_k c_k = rgb - (1 - O) bg, sum w_k = O, sum w_k t_k = depth), and the part
behind each sample is that total less a running sum.
Optical depth accumulates per ray in float32, where the PyTorch path takes differences of a
float64 cumulative sum over the whole batch: the two agree to float32 rounding. As there, each
sample's share of it is capped at :data:`nerf.rendering.OPAQUE` (a diverging density of 1e17,
or inf, hides what is behind it and nothing else), and the optical depth before a sample is a
sum of the samples before it, never ``cumsum(tau) - tau``: in float32 that difference loses
what came before one very dense sample (opacity above 1), and is NaN for an infinite one. The
kernels are compiled without FMA contraction, so that products are rounded before they are
added, as the PyTorch path rounds them (a contracted ``exp(...) * u - behind`` differs).

:mod:`nerf.models` imports this module (and Triton) on first use. With ``TRITON_INTERPRET=1``
set before that, the kernels run on CPU tensors in Triton's interpreter, which is how the CPU
tests check them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from nerf.rendering import OPAQUE, RenderOutput

_BLOCK = 64  # samples per iteration of a ray's program
_OPAQUE = tl.constexpr(OPAQUE)


@triton.jit
def _block(sigmas, deltas, rgbs, ts, i, live, before, BLOCK: tl.constexpr):
    """One block of a ray's samples, ``before`` the capped optical depth of the ray's earlier
    blocks: capped tau, optical depth before each sample, weights, colours and depths (masked
    samples: zeros)."""
    tau = tl.load(sigmas + i, mask=live, other=0.0) * tl.load(deltas + i, mask=live, other=0.0)
    capped = tl.minimum(tau, _OPAQUE)
    # Each sample's predecessor in the block (the first one's is in ``before``): an inclusive
    # sum of those is the exclusive sum of tau, without a subtraction.
    follows = live & (tl.arange(0, BLOCK) > 0)
    previous = (tl.load(sigmas + i - 1, mask=follows, other=0.0)
                * tl.load(deltas + i - 1, mask=follows, other=0.0))
    ahead = before + tl.cumsum(tl.minimum(previous, _OPAQUE), 0)
    w = (1.0 - tl.exp(-tau)) * tl.exp(-ahead)
    r = tl.load(rgbs + i * 3 + 0, mask=live, other=0.0)
    g = tl.load(rgbs + i * 3 + 1, mask=live, other=0.0)
    b = tl.load(rgbs + i * 3 + 2, mask=live, other=0.0)
    t = tl.load(ts + i, mask=live, other=0.0)
    return capped, ahead, w, r, g, b, t


@triton.jit
def _forward(sigmas, deltas, rgbs, ts, bounds, background, out_rgb, out_opacity, out_depth,
             BLOCK: tl.constexpr):
    ray = tl.program_id(0).to(tl.int64)
    start, end = tl.load(bounds + ray), tl.load(bounds + ray + 1)
    before = 0.0
    acc_r, acc_g, acc_b, acc_o, acc_d = 0.0, 0.0, 0.0, 0.0, 0.0
    first = start
    while first < end:  # a while loop: Triton's interpreter cannot range() over loaded bounds
        i = first + tl.arange(0, BLOCK)
        live = i < end
        first += BLOCK
        capped, _, w, r, g, b, t = _block(sigmas, deltas, rgbs, ts, i, live, before, BLOCK)
        acc_r += tl.sum(w * r)
        acc_g += tl.sum(w * g)
        acc_b += tl.sum(w * b)
        acc_o += tl.sum(w)
        acc_d += tl.sum(w * t)
        before += tl.sum(capped)
    empty = 1.0 - acc_o
    tl.store(out_rgb + ray * 3 + 0, acc_r + empty * tl.load(background + 0))
    tl.store(out_rgb + ray * 3 + 1, acc_g + empty * tl.load(background + 1))
    tl.store(out_rgb + ray * 3 + 2, acc_b + empty * tl.load(background + 2))
    tl.store(out_opacity + ray, acc_o)
    tl.store(out_depth + ray, acc_d)


@triton.jit
def _backward(sigmas, deltas, rgbs, ts, bounds, background, out_rgb, out_opacity, out_depth, grad_rgb,
              grad_opacity, grad_depth, grad_sigmas, grad_rgbs, BLOCK: tl.constexpr):
    ray = tl.program_id(0).to(tl.int64)
    start, end = tl.load(bounds + ray), tl.load(bounds + ray + 1)
    gr, gg, gb = (tl.load(grad_rgb + ray * 3 + 0), tl.load(grad_rgb + ray * 3 + 1),
                  tl.load(grad_rgb + ray * 3 + 2))
    br, bg, bb = tl.load(background + 0), tl.load(background + 1), tl.load(background + 2)
    opacity = tl.load(out_opacity + ray)
    # What one unit of weight passes on beyond its colour: opacity, less the background it hides.
    go = tl.load(grad_opacity + ray) - (gr * br + gg * bg + gb * bb)
    gd = tl.load(grad_depth + ray)
    # The ray's sum of w_k u_k, from the forward's outputs: sum w_k c_k = rgb - (1 - O) bg.
    empty = 1.0 - opacity
    total = (gr * (tl.load(out_rgb + ray * 3 + 0) - empty * br)
             + gg * (tl.load(out_rgb + ray * 3 + 1) - empty * bg)
             + gb * (tl.load(out_rgb + ray * 3 + 2) - empty * bb)
             + go * opacity + gd * tl.load(out_depth + ray))
    # Each sample's gradients, with the sum of w_k u_k over the samples behind it.
    before = 0.0
    done = 0.0
    first = start
    while first < end:  # a while loop: Triton's interpreter cannot range() over loaded bounds
        i = first + tl.arange(0, BLOCK)
        live = i < end
        first += BLOCK
        capped, ahead, w, r, g, b, t = _block(sigmas, deltas, rgbs, ts, i, live, before, BLOCK)
        u = gr * r + gg * g + gb * b + go + gd * t
        wu = w * u
        behind = total - (done + tl.cumsum(wu, 0))
        d_tau = tl.exp(-(ahead + capped)) * u - behind
        tl.store(grad_sigmas + i, d_tau * tl.load(deltas + i, mask=live, other=0.0), mask=live)
        tl.store(grad_rgbs + i * 3 + 0, w * gr, mask=live)
        tl.store(grad_rgbs + i * 3 + 1, w * gg, mask=live)
        tl.store(grad_rgbs + i * 3 + 2, w * gb, mask=live)
        done += tl.sum(wu)
        before += tl.sum(capped)


class _RenderPacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigmas: Tensor, rgbs: Tensor, deltas: Tensor, t_mid: Tensor, bounds: Tensor,  # type: ignore[override]
                background: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n_rays = bounds.shape[0] - 1
        sigmas, rgbs, deltas, t_mid, background = (
            x.float().contiguous() for x in (sigmas, rgbs, deltas, t_mid, background)
        )
        rgb = torch.empty(n_rays, 3, dtype=torch.float32, device=sigmas.device)
        opacity = torch.empty(n_rays, dtype=torch.float32, device=sigmas.device)
        depth = torch.empty(n_rays, dtype=torch.float32, device=sigmas.device)
        if n_rays > 0:
            _forward[(n_rays,)](sigmas, deltas, rgbs, t_mid, bounds, background, rgb, opacity, depth,
                                BLOCK=_BLOCK, enable_fp_fusion=False)
        ctx.save_for_backward(sigmas, deltas, rgbs, t_mid, bounds, background, rgb, opacity, depth)
        return rgb, opacity, depth

    @staticmethod
    def backward(ctx, grad_rgb: Tensor, grad_opacity: Tensor, grad_depth: Tensor  # type: ignore[override]
                 ) -> tuple[Tensor, Tensor, None, None, None, None]:
        sigmas, deltas, rgbs, t_mid, bounds, background, rgb, opacity, depth = ctx.saved_tensors
        grad_sigmas, grad_rgbs = torch.empty_like(sigmas), torch.empty_like(rgbs)
        n_rays = bounds.shape[0] - 1
        if n_rays > 0:
            _backward[(n_rays,)](sigmas, deltas, rgbs, t_mid, bounds, background, rgb, opacity, depth,
                                 grad_rgb.float().contiguous(), grad_opacity.float().contiguous(),
                                 grad_depth.float().contiguous(), grad_sigmas, grad_rgbs, BLOCK=_BLOCK,
                                 enable_fp_fusion=False)
        return grad_sigmas, grad_rgbs, None, None, None, None


@torch.compiler.disable  # a graph break: the kernels are already fused
def render_packed(sigmas: Tensor, rgbs: Tensor, deltas: Tensor, t_mid: Tensor, ray_indices: Tensor,
                  n_rays: int, background: Tensor) -> RenderOutput:
    """Colour, depth and opacity of ``n_rays`` rays from their packed samples, as
    :func:`nerf.rendering.weights_packed` then :func:`nerf.rendering.composite_packed`
    compute them; differentiable in ``sigmas`` and ``rgbs``.

    sigmas, deltas, t_mid: (n_samples,); rgbs: (n_samples, 3); ray_indices: (n_samples,)
    int64, non-decreasing; background: (3,). Every ray from 0 to n_rays - 1 may have samples
    or none.
    """
    bounds = torch.searchsorted(ray_indices, torch.arange(n_rays + 1, device=ray_indices.device))
    rgb, opacity, depth = _RenderPacked.apply(sigmas, rgbs, deltas, t_mid, bounds, background)
    return RenderOutput(rgb, depth, opacity)
