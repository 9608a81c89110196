"""The seed field's network as two Triton kernels, for CUDA under bf16 autocast
(``model.seed.mlp_kernel: triton``).

The PyTorch path runs each of the MLP's layers as a matrix product plus elementwise passes:
Fourier features, the skip layer's concatenation, bias and ReLU forward; the ReLU mask and
bias sums backward. On an H100 at the seed's configuration (800,000 samples a step, eight
256-wide layers) those passes took more GPU time than the matrix products
(``bench/results/h100/profile_seed_cuda.txt``). Here one program takes ``BLOCK_ROWS`` samples
through the whole network:

    forward:   x = fourier(p) (bf16, zero-padded to ``IN`` columns),  h_0 = relu(x W_0^T + b_0),
               h_l = relu(h_{l-1} W_l^T + b_l)  (the skip layer adds x V^T),  out = h_7 U^T + c
    backward:  g_7 = dout U,  gp_l = g_l * [h_l > 0],  g_{l-1} = gp_l W_l,
               db_l = sum over samples of gp_l

and the weight gradients (dW_l = gp_l^T h_{l-1}, dV = gp_skip^T x, dU = dout^T h_7) are
matrix products in PyTorch over the layers' inputs and masked gradients, which the kernels
write out. Each layer's product runs over its input in column blocks reloaded from memory the
program has just written (in the GPU's L2 cache), so no activation is held whole in registers.
The layers' matrix products are in bf16 with float32 sums, the activations bf16, as under
PyTorch's autocast; the Fourier features, biases and output head are float32.

:mod:`nerf.fields` imports this module (and Triton) on first use. With ``TRITON_INTERPRET=1``
set before that, the kernels run on CPU tensors in Triton's interpreter, which is how the CPU
tests check them.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")
BLOCK_ROWS = 128  # samples per program
BLOCK_K = 64  # input columns per step of a layer's product
WARPS = 8
STAGES = 2
BLOCK_N = 128  # output columns per product


@triton.jit
def _bf16(x):
    """float32 -> bf16, rounded to nearest even (the GPU's conversion; the interpreters of
    Triton 3.6 and 3.7 truncate, so there the rounding is done on the bits first)."""
    if INTERPRETED:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(tl.bfloat16)


@triton.jit
def _product(src, src_stride, k_size, weights, w_stride_k, w_stride_n, n0, rows, live,
             BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr):
    """src[rows, :k_size] @ B[:, n0:n0 + BLOCK_N], B[k, n] at weights + k w_stride_k + n w_stride_n,
    in column blocks of BLOCK_K of bf16 operands, summed in float32: (BLOCK_ROWS, BLOCK_N)."""
    cols = n0 + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_ROWS, BLOCK_N), dtype=tl.float32)
    for k in tl.range(0, k_size, BLOCK_K, num_stages=STAGES):
        ks = k + tl.arange(0, BLOCK_K)
        a = tl.load(src + rows[:, None] * src_stride + ks[None, :], mask=live[:, None], other=0.0)
        b = tl.load(weights + ks[:, None] * w_stride_k + cols[None, :] * w_stride_n)
        if INTERPRETED:  # Triton 3.6's and 3.7's interpreters multiply bf16 as integers: float32 here
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _forward(inputs, n, scale, hidden_t, in_t, biases, head, head_bias, encoded, acts, out,
             IN_DIM: tl.constexpr, FREQUENCIES: tl.constexpr, IN: tl.constexpr, WIDTH: tl.constexpr,
             DEPTH: tl.constexpr, SKIP: tl.constexpr, SAVE: tl.constexpr, BLOCK_ROWS: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    live = rows < n
    # Fourier features, the layout of nerf.encoding.fourier_encode: column c is input
    # dimension c % IN_DIM of block c // IN_DIM: the raw value, then sin and cos per frequency.
    for c0 in tl.static_range(0, IN, 32):  # 32 columns at a time, to spare registers
        c = c0 + tl.arange(0, 32)
        dim, block = c % IN_DIM, c // IN_DIM
        p = tl.load(inputs + rows[:, None] * IN_DIM + dim[None, :], mask=live[:, None], other=0.0)
        angle = p * (scale * tl.exp2(((block - 1) // 2).to(tl.float32)))[None, :]
        x = tl.where((block % 2 == 1)[None, :], tl.sin(angle), tl.cos(angle))
        x = tl.where((block == 0)[None, :], p, x)
        x = tl.where((block <= 2 * FREQUENCIES)[None, :], x, 0.0)
        tl.store(encoded + rows[:, None] * IN + c[None, :], _bf16(x), mask=live[:, None] & (c < IN)[None, :])
    tl.debug_barrier()  # the first layer reads what every thread wrote
    stride = n.to(tl.int64) * WIDTH  # between layers' activations
    o0 = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    o1, o2, o3 = o0, o0, o0
    for layer in tl.static_range(DEPTH):
        # Without SAVE, two slots in turn: layer l overwrites what layer l - 2 wrote, which
        # layer l - 1 has read before the barrier that ended it.
        slot = layer if SAVE else layer % 2
        before = (layer - 1) if SAVE else (layer - 1) % 2
        for n0 in tl.static_range(0, WIDTH, BLOCK_N):
            if layer == 0:
                acc = _product(encoded, IN, IN, in_t, WIDTH, 1, n0, rows, live, BLOCK_ROWS, BLOCK_N, BLOCK_K,
                               STAGES)
            else:
                acc = _product(acts + before * stride, WIDTH, WIDTH, hidden_t + (layer - 1) * WIDTH * WIDTH,
                               WIDTH, 1, n0, rows, live, BLOCK_ROWS, BLOCK_N, BLOCK_K, STAGES)
                if layer == SKIP:
                    acc += _product(encoded, IN, IN, in_t + IN * WIDTH, WIDTH, 1, n0, rows, live, BLOCK_ROWS,
                                    BLOCK_N, BLOCK_K, STAGES)
            cols = n0 + tl.arange(0, BLOCK_N)
            h = _bf16(tl.maximum(acc + tl.load(biases + layer * WIDTH + cols)[None, :], 0.0))
            tl.store(acts + slot * stride + rows[:, None] * WIDTH + cols[None, :], h, mask=live[:, None])
            if layer == DEPTH - 1:  # the head, a 4-wide product in float32
                hf = h.to(tl.float32)
                o0 += tl.sum(hf * tl.load(head + 0 * WIDTH + cols)[None, :], axis=1)
                o1 += tl.sum(hf * tl.load(head + 1 * WIDTH + cols)[None, :], axis=1)
                o2 += tl.sum(hf * tl.load(head + 2 * WIDTH + cols)[None, :], axis=1)
                o3 += tl.sum(hf * tl.load(head + 3 * WIDTH + cols)[None, :], axis=1)
        tl.debug_barrier()  # the next layer reads what every thread wrote
    tl.store(out + rows * 4 + 0, o0 + tl.load(head_bias + 0), mask=live)
    tl.store(out + rows * 4 + 1, o1 + tl.load(head_bias + 1), mask=live)
    tl.store(out + rows * 4 + 2, o2 + tl.load(head_bias + 2), mask=live)
    tl.store(out + rows * 4 + 3, o3 + tl.load(head_bias + 3), mask=live)


@triton.jit
def _backward(grad_out, n, hidden_t, head, acts, grads, bias_grads,
              WIDTH: tl.constexpr, DEPTH: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr, STAGES: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    live = rows < n
    stride = n.to(tl.int64) * WIDTH
    for step in tl.static_range(DEPTH):
        layer = DEPTH - 1 - step
        for n0 in tl.static_range(0, WIDTH, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            if layer == DEPTH - 1:  # through the head: g = dout U
                g = tl.zeros((BLOCK_ROWS, BLOCK_N), dtype=tl.float32)
                for j in tl.static_range(4):
                    dout = tl.load(grad_out + rows * 4 + j, mask=live, other=0.0)
                    g += dout[:, None] * tl.load(head + j * WIDTH + cols)[None, :]
            else:  # g_l[:, i] = sum_o gp_{l+1}[:, o] W_{l+1}[o, i], W_{l+1}[o, i] = hidden_t[l][i, o]
                g = _product(grads + (layer + 1) * stride, WIDTH, WIDTH, hidden_t + layer * WIDTH * WIDTH, 1,
                             WIDTH, n0, rows, live, BLOCK_ROWS, BLOCK_N, BLOCK_K, STAGES)
            where = rows[:, None] * WIDTH + cols[None, :]
            h = tl.load(acts + layer * stride + where, mask=live[:, None], other=0.0)
            gp = _bf16(tl.where(h > 0, g, 0.0))
            tl.store(grads + layer * stride + where, gp, mask=live[:, None])
            tl.store(bias_grads + (pid * DEPTH + layer) * WIDTH + cols, tl.sum(gp.to(tl.float32), axis=0))
        tl.debug_barrier()  # the next layer's product reads what every thread wrote


def _padded(weight: Tensor, columns: int) -> Tensor:
    """(out, k) -> (columns, out) bf16: the transpose, zero rows below k."""
    return torch.nn.functional.pad(weight.t(), (0, 0, 0, columns - weight.shape[1])).to(torch.bfloat16)


def _blocks(width: int, padded: int) -> dict[str, int]:
    """The kernels' tiling for an MLP ``width`` wide on ``padded`` feature columns."""
    return {"BLOCK_ROWS": BLOCK_ROWS, "BLOCK_N": min(BLOCK_N, width), "BLOCK_K": min(BLOCK_K, width, padded),
            "STAGES": STAGES, "num_warps": WARPS}


class _SeedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: Tensor, frequencies: int, scale: float, skip: int, save: bool,  # type: ignore[override]
                *params: Tensor) -> Tensor:
        weights, biases, (head, head_bias) = params[0:-2:2], params[1:-2:2], params[-2:]
        n, in_dim = inputs.shape
        depth, width = len(weights), weights[0].shape[0]
        features = weights[0].shape[1]
        padded = triton.next_power_of_2(max(features, 16))
        # Depth 1 has no hidden layer: a zero one, unused, keeps the kernels' arguments.
        hidden = [w[:, :width].t() for w in weights[1:]] or [weights[0].new_zeros(width, width)]
        hidden_t = torch.stack(hidden).to(torch.bfloat16).contiguous()
        # The first layer's weights and the skip layer's for the features (zeros without one).
        skip_w = weights[skip][:, width:] if 0 < skip < depth else weights[0].new_zeros(width, features)
        in_t = torch.stack([_padded(weights[0], padded), _padded(skip_w, padded)]).contiguous()
        bias = torch.stack(biases).float().contiguous()
        head, head_bias = head.float().contiguous(), head_bias.float().contiguous()
        device = inputs.device
        encoded = torch.empty(n, padded, dtype=torch.bfloat16, device=device)
        acts = torch.empty(depth if save else 2, n, width, dtype=torch.bfloat16, device=device)
        out = torch.empty(n, 4, dtype=torch.float32, device=device)
        if n > 0:
            _forward[(triton.cdiv(n, BLOCK_ROWS),)](
                inputs.float().contiguous(), n, scale, hidden_t, in_t, bias, head, head_bias, encoded, acts,
                out, IN_DIM=in_dim, FREQUENCIES=frequencies, IN=padded, WIDTH=width, DEPTH=depth, SKIP=skip,
                SAVE=save,
                **_blocks(width, padded),
            )
        if save:
            ctx.save_for_backward(hidden_t, head, encoded, acts)
            ctx.features, ctx.skip, ctx.padded = features, skip, padded
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        hidden_t, head, encoded, acts = ctx.saved_tensors
        depth, n, width = acts.shape
        blocks = triton.cdiv(n, BLOCK_ROWS)
        grad_out = grad_out.float().contiguous()
        grads = torch.empty_like(acts)
        bias_grads = torch.empty(blocks, depth, width, dtype=torch.float32, device=acts.device)
        if n > 0:
            _backward[(blocks,)](grad_out, n, hidden_t, head, acts, grads, bias_grads, WIDTH=width,
                                 DEPTH=depth, **_blocks(width, ctx.padded))
        x = encoded[:, :ctx.features]
        bias = bias_grads.sum(0)  # (depth, width): the programs' partial sums
        params: list[Tensor] = []
        for layer in range(depth):
            g = grads[layer].t()
            w = g @ (x if layer == 0 else acts[layer - 1])
            if layer == ctx.skip and layer > 0:
                w = torch.cat([w, g @ x], dim=1)
            params += [w.float(), bias[layer]]
        params += [(grad_out.t().to(torch.bfloat16) @ acts[-1]).float(), grad_out.sum(0)]
        return None, None, None, None, None, *params


@torch.compiler.disable  # a graph break: the kernels are already fused
def seed_mlp(inputs: Tensor, frequencies: int, scale: float, layers: list[torch.nn.Linear], skip: int,
             head: torch.nn.Linear) -> Tensor:
    """``head(SkipMLP(fourier_encode(inputs, frequencies, scale)))``, differentiable in the layers'
    and head's parameters (not in ``inputs``).

    inputs: (n, in_dim) float32; layers: ``depth`` Linear layers of one width (a power of two,
    at least 16), layer ``skip`` taking [hidden, features]; head: Linear(width, 4).
    Returns (n, 4) float32.
    """
    if head.out_features != 4:
        raise ValueError(f"the kernel's head has 4 outputs, got {head.out_features}")
    params = [p for layer in [*layers, head] for p in (layer.weight, layer.bias)]
    # Inference keeps two layers' activations, training all of them for the backward.
    save = torch.is_grad_enabled() and any(p.requires_grad for p in params)
    return _SeedMLP.apply(inputs, frequencies, scale, skip, save, *params)
