"""Time of seed's MLP forward and backward per tiling of its Triton kernels (nerf.mlp_kernel),
against the PyTorch code under bf16 autocast, as it is and with two changes (the encoding
padded to a multiple of 8 columns; bias and ReLU in the matrix products): the network alone,
at the seed's configuration (one 100x100 image of 80 samples a step = 800,000 samples;
params.yaml's model.seed).

Each tiling is ROWS/N/K/WARPS/STAGES (nerf.mlp_kernel's BLOCK_ROWS, BLOCK_N, BLOCK_K, WARPS,
STAGES); its outputs are compared with the first tiling's (max_difference: the same sums in
another order, so rounding-sized).
Prints and writes CSV; medians of the timed repeats. Without CUDA the kernels run in Triton's
interpreter: a dry run of the script (use --samples 1000), not a measurement.

    python -m bench.mlp_tiles --tilings 128/128/64/8/2 128/128/64/8/3 64/128/64/4/2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

from triton.errors import TritonError

from bench.common import REPO, params_with, write_csv
from nerf import mlp_kernel
from nerf.encoding import fourier_dim, fourier_encode
from nerf.errors import ConfigError, run_stage
from nerf.fields import SeedField, cat_features
from nerf.training import machine

TILES = ("BLOCK_ROWS", "BLOCK_N", "BLOCK_K", "WARPS", "STAGES")


class _LinearReLU(torch.autograd.Function):
    """relu(x w^T + b) as one ``torch._addmm_activation`` (no autograd formula of its own):
    x (n, k), w (m, k), b (m,) -> (n, m)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = torch._addmm_activation(b, x, w.t())
        ctx.save_for_backward(x, w, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x, w, out = ctx.saved_tensors
        masked = grad.masked_fill(out <= 0, 0)
        return (masked @ w if ctx.needs_input_grad[0] else None), masked.t() @ x, masked.sum(0)


def timed(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs after ``warmup``."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mlp_tiles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tilings", nargs="+", default=["128/128/64/8/2"], help="ROWS/N/K/WARPS/STAGES")
    parser.add_argument("--samples", type=int, default=800_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mlp_tiles.csv")
    args = parser.parse_args()
    tilings = []
    for text in args.tilings:
        parts = text.split("/")
        if len(parts) != len(TILES) or not all(p.isdigit() for p in parts):
            raise ConfigError(f"--tilings {text}: expected ROWS/N/K/WARPS/STAGES, five integers, "
                              "e.g. 128/128/64/8/2")
        tilings.append(dict(zip(TILES, map(int, parts))))
    config = params_with(args.params, "seed").model.seed
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    field = SeedField(config.frequencies, config.width, config.depth, config.skip, "triton").to(device)
    inputs = torch.rand(args.samples, 6, device=device) * 2 - 1
    upstream = torch.randn(args.samples, 4, device=device)
    layers = list(field.mlp.layers)

    def fused() -> torch.Tensor:
        out = mlp_kernel.seed_mlp(inputs, config.frequencies, torch.pi, layers, config.skip, field.head)
        (out * upstream).sum().backward()
        return out

    def pytorch() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = field.head(field.mlp(fourier_encode(inputs, config.frequencies, torch.pi))).float()
        (out * upstream).sum().backward()
        return out

    # Two changes to the PyTorch code, timed here before any is made in nerf.fields:
    # - Aligned rows. The encoding is 126 columns and the skip layer's input 382: rows of 252
    #   and 764 bytes in bf16, which cuBLAS's fastest (TMA) kernels cannot load, as they need
    #   16-byte multiples (session 9's profile shows older cutlass kernels at ~1.8 ms of the
    #   ~22.7-ms step). Here the encoding is zero-padded to a multiple of 8 columns, and the
    #   weights that read it get as many zero columns: the same values, aligned rows.
    # - Bias and ReLU in the matrix product's epilogue (torch._addmm_activation, cuBLASLt's
    #   RELU_BIAS on CUDA), not in a pass of their own over each layer's output (clamp_min,
    #   ~2.2 ms of that step).
    pad = -fourier_dim(6, config.frequencies) % 8

    def variant(padding: int, epilogue: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                x = F.pad(fourier_encode(inputs, config.frequencies, torch.pi), (0, padding))
                h = x
                for i, layer in enumerate(layers):
                    if i == field.mlp.skip and i > 0:
                        h = cat_features(h, x)
                    padded = i == 0 or i == field.mlp.skip
                    weight = F.pad(layer.weight, (0, padding)) if padded else layer.weight
                    if epilogue:
                        h = _LinearReLU.apply(*(t.to(torch.bfloat16) for t in (h, weight, layer.bias)))
                    else:
                        h = F.relu(F.linear(h, weight, layer.bias))
                out = field.head(h).float()
            (out * upstream).sum().backward()
            return out

        return run

    reference = pytorch().detach()
    reference_ms = round(timed(pytorch, device, args.repeats, args.warmup), 3)
    rows = [{"code": "pytorch (bf16 autocast)", "ms": reference_ms, "max_difference": ""}]
    print(f"{machine(device)}, {args.samples} samples, {config.depth}x{config.width}: {rows[0]}", flush=True)
    for padding, epilogue in ((pad, False), (0, True), (pad, True)):
        changes = ([f"encoding padded by {padding} columns"] if padding else []) + (
            ["bias and ReLU in the epilogue"] if epilogue else [])
        run = variant(padding, epilogue)
        rows.append({"code": f"pytorch (bf16 autocast), {', '.join(changes)}",
                     "ms": round(timed(run, device, args.repeats, args.warmup), 3),
                     "max_difference": float((run().detach() - reference).abs().max())})
        print(rows[-1], flush=True)
    # Off CUDA the kernels run in Triton's interpreter: a check that they run, not a timing.
    where = machine(device) + ("" if device.type == "cuda" else ", Triton interpreter (not a timing)")

    def save() -> None:  # after each row: a tiling that crashes, or a time limit, keeps the rest
        write_csv(args.out, [{"device": where, "samples": args.samples, **row} for row in rows])

    save()
    first = None
    for tiling in tilings:
        code = "triton " + "/".join(map(str, tiling.values()))
        for name, value in tiling.items():
            setattr(mlp_kernel, name, value)
        try:
            out = fused().detach()
            first = out if first is None else first
            row = {"code": code, "ms": round(timed(fused, device, args.repeats, args.warmup), 3),
                   "max_difference": float((out - first).abs().max())}
        except (TritonError, RuntimeError) as err:  # e.g. past the shared memory: the next may run
            row = {"code": code, "ms": "", "max_difference": f"failed: {type(err).__name__}: "
                                                              f"{str(err).strip().splitlines()[0][:200]}"}
        print(row, flush=True)
        rows.append(row)
        save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
