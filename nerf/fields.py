"""Radiance fields: networks mapping a point and a view direction to colour and density.

Every field is called as ``field(points, directions) -> (rgb, sigma)`` with points and
directions (n, 3), rgb (n, 3) in [0, 1] and sigma (n,) >= 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerf.config import fits_mlp_kernel
from nerf.encoding import HashGrid, SphericalHarmonics, fourier_dim, fourier_encode
from nerf.kernels import prepare, uses_triton


class _Sigmoid(torch.autograd.Function):
    """``1 / (1 + exp(-x))`` with the gradient ``y * (1 - y)``, from ops whose bits do not
    depend on the CPU thread count (see :func:`sigmoid`)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        y = torch.reciprocal(torch.exp(-x) + 1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return grad * (y * (1.0 - y))


def sigmoid(x: Tensor) -> Tensor:
    """The logistic function, elementwise; on the CPU the same bits with any thread count.

    ``torch.sigmoid`` on the CPU computes a vectorised block's elements with one exp and a
    thread's last few elements with another, and where the threads split the tensor depends
    on their number: one element in 150,000 came out an ulp apart with 1 and 2 threads, enough
    for the default run's weights to differ by step 10. ``torch.exp`` computes every element
    the same way, and the rest is exactly rounded arithmetic. Elsewhere ``torch.sigmoid``.
    """
    return _Sigmoid.apply(x) if x.device.type == "cpu" else torch.sigmoid(x)


def cat_features(h: Tensor, x: Tensor) -> Tensor:
    """[h, x] along the last axis, in ``h``'s dtype: (n, a), (n, b) -> (n, a + b).

    Under bf16 autocast ``h`` (a layer's output) is bf16 and ``x`` (an encoding) float32, and
    autocast's ``cat`` promotes to float32, which the next layer then casts back: at the
    seed's 800,000 samples a step on a GPU, a 1.2 GB float32 copy, its cast, and both again
    for the gradient. Casting ``x`` first gives the same values (the layer rounds it to bf16
    either way) and gradients. Without autocast both are float32 and this is ``torch.cat``.
    """
    return torch.cat([h, x.to(h.dtype)], dim=-1)


class SkipMLP(nn.Module):
    """ReLU MLP whose hidden layer ``skip`` takes [hidden, input] (the NeRF skip connection)."""

    def __init__(self, in_dim: int, width: int, depth: int, skip: int) -> None:
        super().__init__()
        self.skip = skip
        self.layers = nn.ModuleList(
            nn.Linear(width + in_dim if i == skip and i > 0 else (in_dim if i == 0 else width), width)
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (n, in_dim) -> (n, width)."""
        h = x
        for i, layer in enumerate(self.layers):
            if i == self.skip and i > 0:
                h = cat_features(h, x)
            # In place: the layer's fresh output is needed by nothing else (its backward keeps
            # its input and weight), and rendering nerf or seed on the CPU, where each output
            # is hundreds of MB, skips allocating another (16-20% less time there with the
            # default chunk, docs/results.md).
            h = F.relu_(layer(h))
        return h


class SeedField(nn.Module):
    """The seed notebook's field: Fourier features (scale pi) of the 6-vector
    (position, direction), one MLP, sigmoid colour and ReLU density from a 4-wide head.
    Density depends on the view direction, as in the seed.

    ``mlp_kernel`` (``model.seed.mlp_kernel``): where the encoding, MLP and head run as the
    fused kernels of :mod:`nerf.mlp_kernel` (see :meth:`uses_triton`)."""

    def __init__(self, frequencies: int = 10, width: int = 256, depth: int = 8, skip: int = 5,
                 mlp_kernel: str = "torch") -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = SkipMLP(fourier_dim(6, frequencies), width, depth, skip)
        self.head = nn.Linear(width, 4)
        self.mlp_kernel = mlp_kernel
        prepare(mlp_kernel, "nerf.mlp_kernel")

    def uses_triton(self, device: torch.device) -> bool:
        """Whether a forward pass on ``device`` now runs the fused kernels: ``triton`` on CUDA
        or under the interpreter; ``auto`` on CUDA under bf16 autocast, where the width fits."""
        if not uses_triton(self.mlp_kernel, device, "model.seed.mlp_kernel"):
            return False
        if self.mlp_kernel == "triton":
            return True
        return (fits_mlp_kernel(self.head.in_features) and torch.is_autocast_enabled(device.type)
                and torch.get_autocast_dtype(device.type) == torch.bfloat16)

    def forward(self, points: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
        inputs = torch.cat([points, directions], dim=-1)  # (n, 6)
        if self.uses_triton(points.device):
            from nerf.mlp_kernel import seed_mlp

            out = seed_mlp(inputs, self.frequencies, torch.pi, list(self.mlp.layers), self.mlp.skip,
                           self.head)
        else:
            out = self.head(self.mlp(fourier_encode(inputs, self.frequencies, torch.pi)))
        return sigmoid(out[:, :3]), F.relu(out[:, 3])


class NerfField(nn.Module):
    """The NeRF paper's field: density from position alone (8 x 256 ReLU with a skip),
    colour from a 128-wide branch that also sees the encoded unit view direction."""

    def __init__(
        self, pos_frequencies: int = 10, dir_frequencies: int = 4, width: int = 256,
        depth: int = 8, skip: int = 5,
    ) -> None:
        super().__init__()
        self.pos_frequencies, self.dir_frequencies = pos_frequencies, dir_frequencies
        self.trunk = SkipMLP(fourier_dim(3, pos_frequencies), width, depth, skip)
        self.sigma = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.branch = nn.Linear(width + fourier_dim(3, dir_frequencies), width // 2)
        self.rgb = nn.Linear(width // 2, 3)

    def forward(self, points: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(fourier_encode(points, self.pos_frequencies))
        sigma = F.relu(self.sigma(h)[:, 0])
        unit = F.normalize(directions, dim=-1)
        d = fourier_encode(unit, self.dir_frequencies)
        h = F.relu(self.branch(cat_features(self.feature(h), d)))
        return sigmoid(self.rgb(h)), sigma


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped (instant-NGP's density activation)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-15.0, 15.0))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


class FastField(nn.Module):
    """Instant-NGP's field: hash-grid features -> small density MLP (density and a geometry
    feature) -> with spherical harmonics of the view direction, a small colour MLP."""

    def __init__(
        self, grid: HashGrid, hidden: int = 64, geo_features: int = 15, sh_degree: int = 4
    ) -> None:
        super().__init__()
        self.grid, self.sh = grid, SphericalHarmonics(sh_degree)
        self.density_net = nn.Sequential(
            nn.Linear(grid.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1 + geo_features)
        )
        self.color_net = nn.Sequential(
            nn.Linear(geo_features + self.sh.out_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 3),
        )

    def _density_and_features(self, points: Tensor) -> tuple[Tensor, Tensor]:
        h = self.density_net(self.grid(points))
        return trunc_exp(h[:, 0] - 1.0), h[:, 1:]

    def density(self, points: Tensor) -> Tensor:
        """sigma (n,) at points (n, 3)."""
        return self._density_and_features(points)[0]

    def forward(
        self, points: Tensor, directions: Tensor, ray_indices: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """points (n, 3); directions (n, 3), or with ``ray_indices`` (n,) one per ray
        (n_rays, 3), sample i's being row ray_indices[i]: then the direction encoding is
        computed once per ray and gathered (the samples of a ray share its direction)."""
        sigma, geo = self._density_and_features(points)
        sh = self.sh(F.normalize(directions, dim=-1))
        if ray_indices is not None:
            sh = sh[ray_indices]
        rgb = sigmoid(self.color_net(cat_features(geo, sh)))
        return rgb, sigma
