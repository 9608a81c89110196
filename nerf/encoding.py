"""Input encodings: Fourier features, spherical harmonics and the multiresolution hash grid."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerf.kernels import prepare, uses_triton


def fourier_encode(x: Tensor, n_frequencies: int, scale: float = 1.0) -> Tensor:
    """Raw input followed by sin/cos features: (..., d) -> (..., d * (2 * n_frequencies + 1)).

    Layout (the seed notebook's): [x, sin(s 2^0 x), cos(s 2^0 x), ..., sin(s 2^(L-1) x),
    cos(s 2^(L-1) x)], each block d wide, with s = ``scale`` (pi in the seed, 1 in the
    NeRF authors' code).
    """
    if n_frequencies == 0:
        return x
    freqs = scale * 2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)
    angles = x.unsqueeze(-2) * freqs.unsqueeze(-1)  # (..., L, d)
    features = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-2)  # (..., L, 2, d)
    features = features.reshape(*x.shape[:-1], 2 * n_frequencies, x.shape[-1])
    encoded = torch.cat([x.unsqueeze(-2), features], dim=-2)  # (..., 2L + 1, d)
    # The width spelled out: reshape cannot infer a -1 from zero rows.
    return encoded.reshape(*x.shape[:-1], fourier_dim(x.shape[-1], n_frequencies))


def fourier_dim(in_dim: int, n_frequencies: int) -> int:
    return in_dim * (2 * n_frequencies + 1)


# Real spherical harmonics up to 4 bands (instant-NGP's "degree" 4) as polynomials in the
# unit direction's (x, y, z): per output, (coefficient, monomial) pairs, each monomial a
# string of axes ("" is 1, "yy" is y^2). Outputs 9 and 15 (m = -3, +3) have the opposite
# sign to instant-NGP's, whose odd m all carry the Condon-Shortley sign. The colour network
# that reads them learns either sign (its initial weights are symmetric about zero); kept, as
# flipping them changes every trained model: the default run moved by seed-like noise
# (-0.96, +0.03 and -0.51 dB validation PSNR for train.seed 0, 1, 2; docs/results.md).
_SH_TERMS: tuple[tuple[tuple[float, str], ...], ...] = (
    ((0.28209479177387814, ""),),
    ((-0.48860251190291987, "y"),),
    ((0.48860251190291987, "z"),),
    ((-0.48860251190291987, "x"),),
    ((1.0925484305920792, "xy"),),
    ((-1.0925484305920792, "yz"),),
    ((0.94617469575755997, "zz"), (-0.31539156525251999, "")),
    ((-1.0925484305920792, "xz"),),
    ((0.54627421529603959, "xx"), (-0.54627421529603959, "yy")),
    ((3 * 0.59004358992664352, "xxy"), (-0.59004358992664352, "yyy")),
    ((2.8906114426405538, "xyz"),),
    ((0.45704579946446572, "y"), (-5 * 0.45704579946446572, "yzz")),
    ((5 * 0.3731763325901154, "zzz"), (-3 * 0.3731763325901154, "z")),
    ((0.45704579946446572, "x"), (-5 * 0.45704579946446572, "xzz")),
    ((1.4453057213202769, "xxz"), (-1.4453057213202769, "yyz")),
    ((0.59004358992664352, "xxx"), (-3 * 0.59004358992664352, "xyy")),
)


def _sh_matrix(degree: int) -> Tensor:
    """(64, degree ** 2) float64: row 16 i + 4 j + k holds the coefficients of the monomial
    m_i m_j m_k, with m = (1, x, y, z); each monomial has one row, the one with i <= j <= k."""
    matrix = torch.zeros(4, 4, 4, degree**2, dtype=torch.float64)
    for out, terms in enumerate(_SH_TERMS[: degree**2]):
        for coefficient, axes in terms:
            i, j, k = sorted("0xyz".index(a) for a in axes.rjust(3, "0"))
            matrix[i, j, k, out] += coefficient
    return matrix.reshape(64, degree**2)


class SphericalHarmonics(nn.Module):
    """Real spherical harmonics of unit directions (n, 3) -> (n, degree ** 2).

    ``degree`` counts bands (1..4), as in instant-NGP; the basis is orthonormal on the sphere.
    Evaluated as the 64 products m_i m_j m_k of m = (1, x, y, z), which hold every monomial of
    degree <= 3, times a constant float32 coefficient matrix (a buffer): four
    tensor ops, where term-by-term formulas take about forty (each a kernel launch on a GPU,
    where fast's training step is bound by launches).
    """

    def __init__(self, degree: int) -> None:
        super().__init__()
        if not 1 <= degree <= 4:
            raise ValueError(f"spherical harmonics degree must be 1..4, got {degree}")
        self.degree = degree
        self.register_buffer("coefficients", _sh_matrix(degree).float(), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.degree**2

    def forward(self, directions: Tensor) -> Tensor:
        m = F.pad(directions, (1, 0), value=1.0)  # (n, 4)
        products = (m[:, :, None, None] * m[:, None, :, None] * m[:, None, None, :]).reshape(-1, 64)
        return products @ self.coefficients.to(directions.dtype)


# Per-axis primes of the spatial hash (Teschner et al., as in instant-NGP), as int32: index
# arithmetic runs in int32 (half the memory traffic of int64), and since the table size is
# a power of two below 2^31, wrapping products leave the masked low bits unchanged.
_PRIMES = (1, 2654435761 - 2**32, 805459861)


def _table_gradient(table: Tensor, rows: Tensor, weights: Tensor, grad: Tensor) -> Tensor:
    """table (T, F), rows and weights (m, k), grad (m, F) -> (T, F): row r gets the sum of
    ``weights[i, j] * grad[i]`` over every (i, j) with ``rows[i, j] == r``, added in (i, j) order.

    On the CPU one ``bincount`` per feature column: the same float32 additions in the same
    order as ``index_add_``, so the same bits, ~3x faster at 3.9M rows (24 against 93 ms;
    index_add_ adds a 2-wide row per index through its generic loop). Elsewhere index_add_
    (bincount's weighted CUDA kernel is not made for this).
    """
    if grad.device.type == "cpu":
        flat = rows.reshape(-1)
        columns = [
            torch.bincount(flat, weights=(weights * grad[:, f, None]).reshape(-1), minlength=table.shape[0])
            for f in range(grad.shape[1])
        ]
        return torch.stack(columns, dim=1).to(table.dtype)
    per_row = (weights[..., None] * grad[:, None, :]).reshape(-1, grad.shape[1])
    return torch.zeros_like(table).index_add_(0, rows.reshape(-1).long(), per_row)  # int32: slow path


class _InterpolateRows(torch.autograd.Function):
    """``sum_k weights[:, k] * table[rows[:, k]]`` as one ``embedding_bag`` (a bag of k rows
    per output, each row scaled by its weight), with a backward that sums the table's
    gradients in index order (:func:`_table_gradient`).

    Measured on the CPU at 65,536 points x 8 levels (4.2M rows): the forward takes ~60 ms
    against ~90 ms for gather, multiply and sum as three ops. Autograd's own backward of
    embedding_bag took ~330 ms under the CPU's deterministic algorithms, and that of
    advanced indexing, ``index_put_(accumulate=True)``, sorts the indices first (83 ms
    against 25 ms for index_add_ on 3.9M indices, in an earlier measurement); summing in index order
    stays deterministic.
    """

    @staticmethod
    def forward(ctx, table: Tensor, rows: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(table, rows, weights)
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:  # type: ignore[override]
        table, rows, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_table = _table_gradient(table, rows, weights, grad)
        if ctx.needs_input_grad[2]:  # only when the points themselves need a gradient
            values = table.index_select(0, rows.reshape(-1)).reshape(*rows.shape, -1)  # (m, k, F)
            grad_weights = (values * grad[:, None, :]).sum(-1)
        return grad_table, None, grad_weights


def interpolate_rows(table: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
    """table (T, F), rows (m, k) int32 or int64, weights (m, k) -> (m, F): each output the
    weighted sum of its k rows; differentiable in ``table`` and ``weights``."""
    return _InterpolateRows.apply(table, rows, weights)


class HashGrid(nn.Module):
    """Multiresolution hash encoding (Müller et al. 2022) of points in [-bound, bound]^3.

    Level l has resolution N_l = floor(base * b^l) cells per side, b chosen so that the last
    level reaches ``max_resolution``. A level whose (N_l + 1)^3 vertices fit in the table is
    stored densely (exact trilinear interpolation of a grid); finer levels hash their
    vertices into 2^log2_table_size entries. All levels live in one table, gathered at once.

    ``kernel``: ``torch`` (this module's PyTorch code everywhere), ``triton`` (the fused
    kernels of :mod:`nerf.hash_kernel` on CUDA, the PyTorch code on other devices) or
    ``auto`` (``triton`` on CUDA where the package is installed, else ``torch``).
    """

    def __init__(
        self,
        levels: int = 16,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        bound: float = 1.5,
        kernel: str = "torch",
    ) -> None:
        super().__init__()
        self.levels, self.features_per_level, self.bound = levels, features_per_level, bound
        self.kernel = kernel
        prepare(kernel, "nerf.hash_kernel")
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        table = 2**log2_table_size
        resolutions, sizes, dense = [], [], []
        for level in range(levels):
            res = math.floor(base_resolution * growth**level + 1e-6)
            fits = (res + 1) ** 3 <= table
            resolutions.append(res)
            dense.append(fits)
            sizes.append((res + 1) ** 3 if fits else table)
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        # Resolutions grow with the level, so the dense levels come first.
        self.n_dense = sum(dense)
        assert all(dense[: self.n_dense]) and not any(dense[self.n_dense :])
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.int32), persistent=False)
        self.register_buffer("dense", torch.tensor(dense), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.int32), persistent=False)
        self.register_buffer("offsets01", torch.tensor([0, 1], dtype=torch.int32), persistent=False)
        self.register_buffer("primes", torch.tensor(_PRIMES, dtype=torch.int32), persistent=False)
        self.hash_mask = table - 1
        self.table = nn.Parameter(torch.empty(offsets[-1], features_per_level).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return self.levels * self.features_per_level

    def uses_triton(self, device: torch.device) -> bool:
        """Whether points on ``device`` are encoded with the Triton kernels: for ``triton`` on
        CUDA, or anywhere under ``TRITON_INTERPRET=1`` (as the CPU tests do); for ``auto`` on
        CUDA with the package installed. ``triton`` without the package is a ConfigError."""
        return uses_triton(self.kernel, device, "model.fast.hash_kernel")

    def _fused(self, points: Tensor) -> bool:
        """The Triton kernels give only the table a gradient: points that need one take the
        PyTorch path."""
        return not points.requires_grad and self.uses_triton(points.device)

    def forward(self, points: Tensor) -> Tensor:
        """points: (n, 3) world coordinates -> features (n, levels * features_per_level)."""
        if self._fused(points):
            from nerf.hash_kernel import hash_encode

            return hash_encode(points, self.table, self.resolutions, self.offsets, self.bound, self.n_dense,
                               self.hash_mask)
        n, levels, d = points.shape[0], self.levels, self.n_dense
        # Level-major with the points last, so that every elementwise op below runs along n
        # contiguous values: on the CPU, ops broadcasting over trailing dims of 2 ran 5-10x
        # slower per element (the whole encoding took 2.1-2.4x as long at 20,000-60,000 points).
        unit = ((points + self.bound) / (2 * self.bound)).clamp(0.0, 1.0).T.contiguous()  # (3, n)
        res = self.resolutions.view(-1, 1)  # (L, 1)
        scaled = unit.unsqueeze(1) * res.to(unit.dtype)  # (3, L, n)
        lower = torch.minimum(scaled.floor().int(), res - 1)  # (3, L, n) int32
        frac = scaled - lower  # (3, L, n)
        # Per axis, the two vertex coordinates and their interpolation weights: (L, 2, n).
        x, y, z = (lower[k].unsqueeze(1) + self.offsets01.view(2, 1) for k in range(3))
        wx, wy, wz = (torch.stack([1 - frac[k], frac[k]], dim=1) for k in range(3))
        # Each level's 8 corners (z, y, x order) as rows of the table, level offset included:
        # dense levels index their grid directly, the others hash; each computes only its own.
        rows = torch.empty(levels, 2, 2, 2, n, dtype=torch.int32, device=points.device)
        if d > 0:
            stride = (res[:d] + 1).view(-1, 1, 1)
            zs = z[:d] * stride * stride + self.offsets[:d].view(-1, 1, 1)
            torch.add(zs[:, :, None, None] + (y[:d] * stride)[:, None, :, None], x[:d, None, None],
                      out=rows[:d])
        if d < levels:
            mask = self.hash_mask  # (a ^ b ^ c) & mask, with each term masked first
            zh, yh = (z[d:] * self.primes[2]) & mask, (y[d:] * self.primes[1]) & mask
            torch.bitwise_xor(zh[:, :, None, None] ^ yh[:, None, :, None], x[d:, None, None] & mask,
                              out=rows[d:])
            rows[d:] += self.offsets[d:].view(-1, 1, 1, 1, 1)
        weights = wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]  # (L, 2, 2, 2, n)
        # embedding_bag takes each bag's rows side by side: (n * L, 8), point by point.
        rows = rows.view(levels, 8, n).permute(2, 0, 1).reshape(n * levels, 8)
        weights = weights.view(levels, 8, n).permute(2, 0, 1).reshape(n * levels, 8)
        features = interpolate_rows(self.table, rows, weights)  # (n * L, F)
        return features.reshape(n, self.out_dim)
