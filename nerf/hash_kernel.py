"""The hash-grid encoding as one fused Triton kernel, forward and backward, for CUDA
(``model.fast.hash_kernel: triton``).

The PyTorch path in :mod:`nerf.encoding` builds, per point, level and cube corner, a row
index and a weight as separate tensors (a few dozen elementwise kernels and, at 262144
samples and 16 levels, hundreds of megabytes of intermediates per step) before one
``embedding_bag``, and sums the gradients into the table with ``index_add_``. Here one
program per (block of points, level) computes the cell, the eight corners' rows and
trilinear weights in registers and

    forward:  features[i, level] = sum_corners weight * table[row]          (n, levels * F)
    backward: table_grad[row] += weight * grad_features[i, level]          (atomic adds)

with the same rows as the PyTorch path (dense levels index their grid, the others hash
with the same primes in wrapping int32) and the same weights, so the two agree up to the
order of the float sums. Only the table gets a gradient: the points the pipeline encodes
never require one (:meth:`nerf.encoding.HashGrid.forward` keeps the PyTorch path when they do).

:mod:`nerf.encoding` imports this module (and Triton) on first use. With
``TRITON_INTERPRET=1`` set before that, the kernels run on CPU tensors in Triton's
interpreter, which is how the CPU tests check them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from nerf.encoding import _PRIMES

_BLOCK = 128  # points per program
_PRIME_Y = tl.constexpr(_PRIMES[1])
_PRIME_Z = tl.constexpr(_PRIMES[2])


@triton.jit
def _cell(points, i, live, bound, res):
    """Lower corner (int32) and fractions of each point's cell at resolution ``res``."""
    scale = res.to(tl.float32)
    x = tl.load(points + i * 3 + 0, mask=live, other=0.0)
    y = tl.load(points + i * 3 + 1, mask=live, other=0.0)
    z = tl.load(points + i * 3 + 2, mask=live, other=0.0)
    ux = tl.minimum(tl.maximum((x + bound) / (2 * bound), 0.0), 1.0) * scale
    uy = tl.minimum(tl.maximum((y + bound) / (2 * bound), 0.0), 1.0) * scale
    uz = tl.minimum(tl.maximum((z + bound) / (2 * bound), 0.0), 1.0) * scale
    lx = tl.minimum(tl.floor(ux).to(tl.int32), res - 1)
    ly = tl.minimum(tl.floor(uy).to(tl.int32), res - 1)
    lz = tl.minimum(tl.floor(uz).to(tl.int32), res - 1)
    return lx, ly, lz, ux - lx.to(tl.float32), uy - ly.to(tl.float32), uz - lz.to(tl.float32)


@triton.jit
def _corner(lx, ly, lz, fx, fy, fz, res, offset, dense, hash_mask, CORNER: tl.constexpr):
    """Table row and trilinear weight of one of the cell's eight corners (bit 0: x, bit 1:
    y, bit 2: z)."""
    bx: tl.constexpr = CORNER & 1
    by: tl.constexpr = (CORNER >> 1) & 1
    bz: tl.constexpr = (CORNER >> 2) & 1
    cx, cy, cz = lx + bx, ly + by, lz + bz
    wx = fx * bx + (1.0 - fx) * (1 - bx)
    wy = fy * by + (1.0 - fy) * (1 - by)
    wz = fz * bz + (1.0 - fz) * (1 - bz)
    stride = res + 1
    dense_row = (cz * stride + cy) * stride + cx
    hash_row = ((cz * _PRIME_Z) ^ (cy * _PRIME_Y) ^ cx) & hash_mask
    return tl.where(dense, dense_row, hash_row) + offset, wz * wy * wx


# Not specialised on the point count: Triton would otherwise compile a variant per
# divisibility class of n (each ~1-2 s on first use, within the training clock).
@triton.jit(do_not_specialize=["n"])
def _encode(points, table, features, resolutions, offsets, n, bound, n_dense, hash_mask,
            BACKWARD: tl.constexpr, LEVELS: tl.constexpr, F: tl.constexpr, FP: tl.constexpr,
            BLOCK: tl.constexpr):
    """Forward: features (n, LEVELS * F) = the table interpolated at this program's points and
    level. Backward (``table`` is then the table's gradient and ``features`` the features'):
    each corner row gets its weight times the features' gradient, by atomic adds."""
    level = tl.program_id(1)
    # 64-bit: the features' offsets, i * LEVELS * F, pass 2^31 at 2^26 points of 16 x 2 features
    # (table rows stay below 2^31 / F: nerf.config refuses larger tables).
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = i < n
    feature = tl.arange(0, FP)
    both = live[:, None] & (feature < F)[None, :]
    res = tl.load(resolutions + level)
    offset = tl.load(offsets + level)
    lx, ly, lz, fx, fy, fz = _cell(points, i, live, bound, res)
    at_level = features + i[:, None] * (LEVELS * F) + level * F + feature[None, :]
    if BACKWARD:
        grad = tl.load(at_level, mask=both, other=0.0)
    else:
        acc = tl.zeros((BLOCK, FP), dtype=tl.float32)
    for c in tl.static_range(8):
        row, weight = _corner(lx, ly, lz, fx, fy, fz, res, offset, level < n_dense, hash_mask, c)
        at_row = table + row[:, None] * F + feature[None, :]
        if BACKWARD:
            tl.atomic_add(at_row, weight[:, None] * grad, mask=both)
        else:
            acc += weight[:, None] * tl.load(at_row, mask=both, other=0.0)
    if not BACKWARD:
        tl.store(at_level, acc, mask=both)


def _launch(points: Tensor, table: Tensor, features: Tensor, resolutions: Tensor, offsets: Tensor,
            bound: float, n_dense: int, hash_mask: int, backward: bool) -> None:
    n, levels, width = points.shape[0], resolutions.shape[0], table.shape[1]
    if n > 0:
        _encode[(triton.cdiv(n, _BLOCK), levels)](
            points, table, features, resolutions, offsets, n, bound, n_dense, hash_mask, BACKWARD=backward,
            LEVELS=levels, F=width, FP=triton.next_power_of_2(width), BLOCK=_BLOCK,
        )


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points: Tensor, table: Tensor, resolutions: Tensor, offsets: Tensor,  # type: ignore[override]
                bound: float, n_dense: int, hash_mask: int) -> Tensor:
        points = points.float().contiguous()
        out = torch.empty(points.shape[0], resolutions.shape[0] * table.shape[1], dtype=torch.float32,
                          device=points.device)
        _launch(points, table.contiguous(), out, resolutions, offsets, bound, n_dense, hash_mask,
                backward=False)
        ctx.save_for_backward(points, resolutions, offsets)
        ctx.settings = (table.shape, bound, n_dense, hash_mask)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None, None, None, None, None]:  # type: ignore[override]
        points, resolutions, offsets = ctx.saved_tensors
        shape, bound, n_dense, hash_mask = ctx.settings
        grad_table = torch.zeros(shape, dtype=torch.float32, device=points.device)
        _launch(points, grad_table, grad.float().contiguous(), resolutions, offsets, bound, n_dense,
                hash_mask, backward=True)
        return None, grad_table, None, None, None, None, None


@torch.compiler.disable  # a graph break: the kernels are already fused
def hash_encode(points: Tensor, table: Tensor, resolutions: Tensor, offsets: Tensor, bound: float,
                n_dense: int, hash_mask: int) -> Tensor:
    """points (n, 3), table (rows, F) -> features (n, levels * F), float32; differentiable in
    ``table``. ``resolutions`` and ``offsets`` (levels,) int32 as in :class:`nerf.encoding.HashGrid`:
    levels below ``n_dense`` are dense grids, the others hash with ``hash_mask``."""
    return _HashEncode.apply(points, table, resolutions, offsets, bound, n_dense, hash_mask)
