"""PSNR and SSIM against hand computations and a direct SSIM implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nerf.config import gaussian_window_size
from nerf.metrics import mse_to_psnr, psnr, ssim


def test_psnr_constant_error_is_20_db() -> None:
    target = torch.full((2, 5, 7, 3), 0.5)
    pred = target + 0.1  # mse = 0.01 -> 20 dB
    out = psnr(pred, target)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([20.0, 20.0], abs=1e-5)


def test_psnr_per_image_and_mse_to_psnr() -> None:
    target = torch.zeros(2, 4, 4, 3)
    pred = target.clone()
    pred[0] = 0.1  # mse 0.01 -> 20 dB
    pred[1, :2] = 0.1  # half the pixels: mse 0.005 -> 20 + 10*log10(2)
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 20.0 + 10 * math.log10(2)], abs=1e-5)
    assert mse_to_psnr(torch.tensor([1.0, 1e-3])).tolist() == pytest.approx([0.0, 30.0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_psnr_of_low_precision_images_is_computed_in_float64(dtype: torch.dtype) -> None:
    # Rendered images may come in half precision; their difference must not be rounded to it.
    generator = torch.Generator().manual_seed(3)
    pred, target = (torch.rand(2, 9, 11, 3, generator=generator).to(dtype) for _ in range(2))
    expected = -10 * torch.log10((pred.double() - target.double()).square().mean(dim=(1, 2, 3)))
    assert psnr(pred, target).dtype == torch.float64
    assert psnr(pred, target).tolist() == pytest.approx(expected.tolist(), rel=1e-12)


def test_mse_to_psnr_of_a_float32_loss_is_float64() -> None:
    # Training logs PSNR from a float32 loss: the logarithm must still be taken in float64.
    mse = torch.tensor([0.3, 1e-3], dtype=torch.float32)
    out = mse_to_psnr(mse)
    assert out.dtype == torch.float64
    assert out.tolist() == pytest.approx([-10 * math.log10(float(m)) for m in mse], rel=1e-13)


def test_psnr_identical_is_inf() -> None:
    image = torch.rand(1, 6, 6, 3)
    assert psnr(image, image.clone()).item() == math.inf


def test_psnr_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3))
    with pytest.raises(ValueError, match="shapes differ"):  # as many pixels, but broadcastable
        psnr(torch.zeros(2, 1, 4, 3), torch.zeros(1, 2, 4, 3))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., h, w, 3\) images, got shape \(4, 3\)"):
        psnr(torch.zeros(4, 3), torch.zeros(4, 3))  # one row of pixels, not an image


def test_ssim_identical_is_one_and_degradation_lowers_it() -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 32, 32, 3, generator=gen)
    noise = torch.randn(1, 32, 32, 3, generator=gen)
    assert ssim(image, image.clone()).item() == pytest.approx(1.0, abs=1e-9)
    light = ssim((image + 0.05 * noise).clamp(0, 1), image).item()
    heavy = ssim((image + 0.3 * noise).clamp(0, 1), image).item()
    assert 0.0 < heavy < light < 0.99


def test_ssim_scores_each_image_of_a_batch_on_its_own() -> None:
    gen = torch.Generator().manual_seed(2)
    truth = torch.rand(2, 16, 16, 3, generator=gen)
    pred = truth.clone()
    pred[1] = (pred[1] + 0.2 * torch.randn(16, 16, 3, generator=gen)).clamp(0, 1)
    out = ssim(pred, truth)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(1.0, abs=1e-9)
    assert out[1].item() == pytest.approx(ssim(pred[1:], truth[1:]).item(), abs=1e-12) and out[1] < 0.9


def _direct_ssim(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """SSIM of (h, w, 3) images by explicit weighted windows, one pixel and channel at a time.

    Same definition torchmetrics uses: Gaussian window, data range 1, K1=0.01, K2=0.03,
    images reflect-padded by half a window (numpy "reflect" = torch "reflect": no edge repeat)
    so that every pixel has a window, SSIM averaged over all pixels and channels.
    """
    half = size // 2
    g = np.exp(-0.5 * ((np.arange(size) - half) / sigma) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    xp = np.pad(x, ((half, half), (half, half), (0, 0)), mode="reflect")
    yp = np.pad(y, ((half, half), (half, half), (0, 0)), mode="reflect")
    values = []
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            for c in range(3):
                a, b = xp[i : i + size, j : j + size, c], yp[i : i + size, j : j + size, c]
                mx, my = (w * a).sum(), (w * b).sum()
                vx, vy = (w * (a - mx) ** 2).sum(), (w * (b - my) ** 2).sum()
                cov = (w * (a - mx) * (b - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


@pytest.mark.parametrize("sigma", [1.5, 1.0, 0.5])
def test_ssim_matches_direct_gaussian_window_implementation(sigma: float) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((16, 18, 3))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    # The window torchmetrics derives from sigma (9 pixels for 1.0, 5 for 0.5): any other
    # size in the direct implementation would move the score.
    size = gaussian_window_size(sigma)
    got = ssim(torch.from_numpy(y)[None], torch.from_numpy(x)[None], size, sigma).item()
    # Both sides are float64 and differ only in summation order (conv vs explicit windows,
    # E[x^2]-mu^2 vs centred variance): round-off is ~1e-15, so 1e-9 leaves room and still
    # catches any change of window, padding, constants or averaging region: sigma 1.4 instead
    # of 1.5 moves it by 4e-4, averaging only the valid interior (no reflected border) by 7e-3.
    assert got == pytest.approx(_direct_ssim(y, x, size, sigma), abs=1e-9)
    assert got < 0.99


def test_ssim_window_must_match_sigma() -> None:
    assert gaussian_window_size(1.5) == 11
    image = torch.rand(1, 16, 16, 3)
    with pytest.raises(ValueError, match="kernel size 7"):
        ssim(image, image, kernel_size=7, sigma=1.5)
    assert ssim(image, image, kernel_size=7, sigma=0.9).item() == pytest.approx(1.0)


def test_metrics_refuse_images_they_cannot_score() -> None:
    with pytest.raises(ValueError, match=r"expected \(\.\.\., h, w, 3\) images, got shape \(4, 4, 4\)"):
        psnr(torch.zeros(4, 4, 4), torch.zeros(4, 4, 4))  # RGBA, not RGB
    with pytest.raises(ValueError, match=r"expected \(n, h, w, 3\) images, got shape \(1, 1, 16, 16, 3\)"):
        ssim(torch.zeros(1, 1, 16, 16, 3), torch.zeros(1, 1, 16, 16, 3))
    with pytest.raises(ValueError, match=r"shape \(1, 5, 16, 3\) are too small for a 11-pixel SSIM window"):
        ssim(torch.zeros(1, 5, 16, 3), torch.zeros(1, 5, 16, 3))
    just_big_enough = torch.zeros(1, 6, 16, 3)
    assert ssim(just_big_enough, just_big_enough).item() == pytest.approx(1.0)
