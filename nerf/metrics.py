"""Image quality metrics: PSNR and SSIM for images in [0, 1], channels last.

Both compute in float64 and return float64 tensors, one value per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nerf.config import gaussian_window_size


def _check_pair(pred: Tensor, target: Tensor, min_dims: int) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim < min_dims or pred.shape[-1] != 3:
        raise ValueError(f"expected (..., h, w, 3) images, got shape {tuple(pred.shape)}")


def mse_to_psnr(mse: Tensor) -> Tensor:
    """PSNR in dB of a mean squared error for a data range of 1: ``-10 * log10(mse)``.

    mse: any shape, >= 0. Returns the same shape; ``mse == 0`` gives ``+inf`` (kept, not
    clamped, so that a perfect reconstruction is visible as such rather than as a fake number).
    """
    return -10.0 * torch.log10(mse.to(torch.float64))


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB, one value per image.

    pred, target: (..., h, w, 3) in [0, 1]. Returns (...,) float64; identical images give +inf.
    """
    _check_pair(pred, target, 3)
    err = pred.to(torch.float64) - target.to(torch.float64)
    return mse_to_psnr(err.square().mean(dim=(-3, -2, -1)))


def ssim(pred: Tensor, target: Tensor, kernel_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004) per image, via torchmetrics.

    pred, target: (n, h, w, 3) in [0, 1]. Returns (n,) float64.
    Gaussian window (``kernel_size``, ``sigma``), data range 1, K1=0.01, K2=0.03, SSIM averaged
    over the three channels and over every pixel: torchmetrics reflect-pads the images by half
    a window, so border pixels count, with windows reaching into the mirrored image.
    Raises ValueError if ``kernel_size`` is not :func:`gaussian_window_size` of ``sigma``
    (torchmetrics would silently use the latter) or if h or w is not larger than half a window.
    """
    _check_pair(pred, target, 4)
    if pred.ndim != 4:
        raise ValueError(f"expected (n, h, w, 3) images, got shape {tuple(pred.shape)}")
    if kernel_size != gaussian_window_size(sigma):
        raise ValueError(
            f"SSIM kernel size {kernel_size} does not match sigma {sigma}: torchmetrics uses a "
            f"{gaussian_window_size(sigma)}-pixel Gaussian window for it"
        )
    if min(pred.shape[1:3]) <= kernel_size // 2:
        raise ValueError(f"images of shape {tuple(pred.shape)} are too small for a {kernel_size}-pixel "
                         "SSIM window")
    # Imported here: torchmetrics takes ~1 s to import, and of the stages only evaluate needs it.
    from torchmetrics.functional.image import structural_similarity_index_measure

    to_nchw = lambda x: x.to(torch.float64).permute(0, 3, 1, 2).contiguous()
    return structural_similarity_index_measure(
        to_nchw(pred), to_nchw(target), gaussian_kernel=True, sigma=sigma,
        kernel_size=kernel_size, data_range=1.0, reduction="none",
    )
