"""Volume rendering: samples' densities and colours to pixel colour, depth and opacity.

For samples i = 1..S along a ray with density sigma_i over an interval of length delta_i:

    alpha_i   = 1 - exp(-sigma_i * delta_i)
    T_i       = prod_{j < i} exp(-sigma_j * delta_j)        (exclusive: T_1 = 1)
    weight_i  = alpha_i * T_i
    colour    = sum_i weight_i * c_i + (1 - opacity) * background,  opacity = sum_i weight_i

Two layouts share these formulas: *dense* (every ray has S samples, (n_rays, S) tensors)
and *packed* (a flat list of samples sorted by ray, with ``ray_indices``), which the
occupancy-grid sampler produces.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# An optical depth past which a sample hides everything behind it (exp(-OPAQUE) is 0 in
# float32 and float64 alike).
OPAQUE = 1e4


class RenderOutput(NamedTuple):
    rgb: Tensor  # (n_rays, 3)
    depth: Tensor  # (n_rays,) sum of weight * t: expected depth with the background at t = 0
    opacity: Tensor  # (n_rays,) sum of weights, in [0, 1]
    coarse_rgb: Tensor | None = None  # (n_rays, 3) hierarchical models' coarse pass
    coarse_opacity: Tensor | None = None  # (n_rays,) and its opacity


def weights_dense(sigmas: Tensor, deltas: Tensor) -> Tensor:
    """weights: (n_rays, n_samples) from sigmas, deltas (n_rays, n_samples)."""
    tau = sigmas * deltas
    # Optical depth before sample i, summed from the ray's start (not cumsum(tau) - tau, which
    # in float32 loses the thin samples' part behind one very dense sample: opacity above 1).
    before = torch.cumsum(F.pad(tau[..., :-1], (1, 0)), dim=-1)
    return (1.0 - torch.exp(-tau)) * torch.exp(-before)


def composite_dense(
    weights: Tensor, rgbs: Tensor, t: Tensor, background: Tensor
) -> RenderOutput:
    """weights, t: (n_rays, n_samples); rgbs: (n_rays, n_samples, 3); background: (3,).

    ``t`` is each sample's depth, where its field value was taken: the depth is the weighted
    mean of those (the dense models' samples start their intervals, ``fast``'s are midpoints)."""
    opacity = weights.sum(dim=-1)
    rgb = (weights.unsqueeze(-1) * rgbs).sum(dim=-2) + (1.0 - opacity).unsqueeze(-1) * background
    depth = (weights * t).sum(dim=-1)
    return RenderOutput(rgb, depth, opacity)


def weights_packed(sigmas: Tensor, deltas: Tensor, ray_indices: Tensor) -> Tensor:
    """weights: (n_samples,) for packed samples.

    sigmas, deltas: (n_samples,); ray_indices: (n_samples,) int64, non-decreasing (samples
    of one ray contiguous and in depth order).
    """
    tau = sigmas * deltas
    # Segmented exclusive cumsum: the global exclusive cumsum minus its value at the ray's
    # first sample, in float64 so that the difference of the batch's large sums keeps each
    # ray's part (MPS has no float64: there on the CPU). Each sample's share is capped at
    # OPAQUE, beyond which it hides everything behind it anyway: one diverging density must
    # not swamp the sums of the rays after it.
    capped = tau.clamp(max=OPAQUE)
    capped = capped.cpu() if tau.device.type == "mps" else capped
    tau64 = capped.double()
    exclusive = torch.cumsum(tau64, dim=0) - tau64
    # Index of each sample's ray's first sample (sorted indices: no host sync, unlike bincount).
    first = torch.searchsorted(ray_indices, ray_indices, side="left").to(exclusive.device)
    before = (exclusive - exclusive[first]).to(tau.device, tau.dtype)
    return (1.0 - torch.exp(-tau)) * torch.exp(-before.clamp(min=0.0))


def composite_packed(
    weights: Tensor,
    rgbs: Tensor,
    t_mid: Tensor,
    ray_indices: Tensor,
    n_rays: int,
    background: Tensor,
) -> RenderOutput:
    """weights, t_mid, ray_indices: (n_samples,); rgbs: (n_samples, 3); background: (3,)."""
    opacity = torch.zeros(n_rays, dtype=weights.dtype, device=weights.device).index_add(
        0, ray_indices, weights
    )
    rgb = torch.zeros(n_rays, 3, dtype=rgbs.dtype, device=rgbs.device).index_add(
        0, ray_indices, weights.unsqueeze(-1) * rgbs
    )
    depth = torch.zeros(n_rays, dtype=weights.dtype, device=weights.device).index_add(
        0, ray_indices, weights * t_mid
    )
    rgb = rgb + (1.0 - opacity).unsqueeze(-1) * background
    return RenderOutput(rgb, depth, opacity)


def recomposite(rgb: Tensor, opacity: Tensor, old: Tensor, new: Tensor) -> Tensor:
    """Colours composited on ``old`` moved onto ``new``: rgb + (1 - opacity) (new - old).

    rgb: (n, 3); opacity: (n,) coverage in [0, 1] (a render's opacity, or an image's alpha);
    old: (3,) or (n, 3); new: (3,) or (n, 3) -> (n, 3). Exact for anything composited as
    ``colour + (1 - opacity) * background``, area-averaged images included.
    """
    return rgb + (1.0 - opacity).unsqueeze(-1) * (new - old)
