"""The model kinds: how each turns a batch of rays into colours.

A model reads top to bottom: sampler -> field -> weights -> composite. Each kind is a
small ``nn.Module`` with

    render_rays(rays, randomized, generator) -> RenderOutput
    before_step(step, generator)          # per-step upkeep (occupancy grid)
    rays_per_batch() -> int | None        # None: one whole training image per step

``build_model(config, near, far, background)`` constructs the configured kind.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from nerf.config import FastModelConfig, ModelConfig, NerfModelConfig, SeedModelConfig
from nerf.encoding import HashGrid
from nerf.fields import FastField, NerfField, SeedField
from nerf.kernels import prepare, uses_triton
from nerf.occupancy import OccupancyGrid
from nerf.rays import Rays, image_rays
from nerf.rendering import (
    RenderOutput,
    composite_dense,
    composite_packed,
    weights_dense,
    weights_packed,
)
from nerf.sampling import intervals, sample_pdf, stratified_samples


class _Scene(nn.Module):
    """Depth range and background colour shared by all kinds."""

    # Keyword arguments for torch.optim.Adam beyond the learning rate.
    adam_options: ClassVar[dict] = {}
    # Whether train.precision=auto trains under bf16 autocast on CUDA: measured on an H100
    # (python -m bench.speed), the large MLPs of seed and nerf run 2-3x faster in bf16; fast's
    # steps are bound by kernel launches, and the casts made them slower (112 -> 68 steps/s).
    bf16_on_cuda: ClassVar[bool] = True

    def __init__(self, near: float, far: float, background: Tensor) -> None:
        super().__init__()
        self.near, self.far = near, far
        self.register_buffer("background", background.float().reshape(3))

    def before_step(self, step: int, generator: torch.Generator | None = None) -> None:
        pass

    def fields(self) -> list[nn.Module]:
        """The radiance fields this model evaluates (what training may compile)."""
        found = (getattr(self, name, None) for name in ("field", "coarse", "fine"))
        return [m for m in found if m is not None]

    def _render_dense(self, field: nn.Module, rays: Rays, t: Tensor) -> tuple[RenderOutput, Tensor]:
        """Field at depths t (n_rays, n_samples) -> render output and weights."""
        t_starts, t_ends = intervals(t, self.far)
        points = rays.origins[:, None, :] + rays.directions[:, None, :] * t_starts[..., None]
        directions = rays.directions[:, None, :].expand_as(points)
        rgb, sigma = field(points.reshape(-1, 3), directions.reshape(-1, 3))
        n_rays, n_samples = t.shape
        deltas = (t_ends - t_starts) * rays.directions.norm(dim=-1, keepdim=True)
        weights = weights_dense(sigma.reshape(n_rays, n_samples), deltas)
        out = composite_dense(weights, rgb.reshape(n_rays, n_samples, 3), t_starts, self.background)
        return out, weights


class SeedModel(_Scene):
    """The seed notebook's NeRF, with the exclusive transmittance: stratified samples on
    [near, far] into one MLP of (position, direction); one whole image per training step."""

    def __init__(self, config: SeedModelConfig, near: float, far: float, background: Tensor) -> None:
        super().__init__(near, far, background)
        self.config = config
        self.field = SeedField(config.frequencies, config.width, config.depth, config.skip, config.mlp_kernel)

    def rays_per_batch(self) -> int | None:
        return None

    def render_rays(
        self, rays: Rays, randomized: bool, generator: torch.Generator | None = None
    ) -> RenderOutput:
        t = stratified_samples(
            len(rays), self.config.samples, self.near, self.far, randomized, rays.origins.device, generator
        )
        return self._render_dense(self.field, rays, t)[0]


class NerfModel(_Scene):
    """The NeRF paper's: coarse stratified samples, then fine samples drawn by inverse CDF
    from the coarse weights; the fine network sees both sets. Both are supervised."""

    def __init__(self, config: NerfModelConfig, near: float, far: float, background: Tensor) -> None:
        super().__init__(near, far, background)
        self.config = config
        make = lambda: NerfField(
            config.pos_frequencies, config.dir_frequencies, config.width, config.depth, config.skip
        )
        self.coarse = make()
        self.fine = make() if config.fine_samples > 0 else None

    def rays_per_batch(self) -> int | None:
        return self.config.rays_per_batch

    def render_rays(
        self, rays: Rays, randomized: bool, generator: torch.Generator | None = None
    ) -> RenderOutput:
        device = rays.origins.device
        t = stratified_samples(len(rays), self.config.coarse_samples, self.near, self.far, randomized, device,
                               generator)
        coarse, weights = self._render_dense(self.coarse, rays, t)
        if self.fine is None:
            return coarse
        starts, ends = intervals(t, self.far)
        bins = torch.cat([starts, ends[:, -1:]], dim=-1)
        t_fine = sample_pdf(bins, weights.detach(), self.config.fine_samples, randomized, generator)
        t_all = torch.sort(torch.cat([t, t_fine.detach()], dim=-1), dim=-1).values
        fine, _ = self._render_dense(self.fine, rays, t_all)
        return fine._replace(coarse_rgb=coarse.rgb, coarse_opacity=coarse.opacity)


class FastModel(_Scene):
    """Instant-NGP family: hash-grid field, occupancy-grid marching, packed rendering;
    ray batches sized to a roughly constant number of samples."""

    # Hash tables see sparse, tiny gradients: instant-NGP's Adam settings.
    adam_options: ClassVar[dict] = {"betas": (0.9, 0.99), "eps": 1e-15}
    bf16_on_cuda: ClassVar[bool] = False

    def __init__(self, config: FastModelConfig, near: float, far: float, background: Tensor) -> None:
        super().__init__(near, far, background)
        self.config = config
        grid = HashGrid(
            config.levels, config.features_per_level, config.log2_table_size,
            config.base_resolution, config.max_resolution, config.bound, config.hash_kernel,
        )
        self.field = FastField(grid, config.hidden, config.geo_features, config.sh_degree)
        prepare(config.render_kernel, "nerf.render_kernel")
        self.occupancy = OccupancyGrid(
            config.grid_resolution, config.bound, config.grid_threshold, config.steps_per_diagonal,
            config.march_kernel,
        )
        # Running mean of samples per ray, to size the next batch (a buffer: it is checkpointed),
        # and its host copy, kept in step in float32 so that reading it never waits for the GPU.
        self.register_buffer("samples_per_ray", torch.tensor(float(config.steps_per_diagonal)))
        self._samples_per_ray = np.float32(config.steps_per_diagonal)
        self.register_load_state_dict_post_hook(FastModel._reload_samples_per_ray)

    @staticmethod
    def _reload_samples_per_ray(module: FastModel, incompatible_keys: object) -> None:
        module._samples_per_ray = np.float32(module.samples_per_ray.item())

    def rays_per_batch(self) -> int:
        estimate = self.config.samples_per_batch / max(float(self._samples_per_ray), 1.0)
        return int(min(max(estimate, 64), self.config.max_rays_per_batch))

    def before_step(self, step: int, generator: torch.Generator | None = None) -> None:
        if step > 0 and step % self.config.grid_update_every == 0:
            self.occupancy.update(self.field.density, generator=generator)

    def render_rays(
        self, rays: Rays, randomized: bool, generator: torch.Generator | None = None
    ) -> RenderOutput:
        samples = self.occupancy.march(rays, self.near, self.far, randomized, generator)
        t_mid = 0.5 * (samples.t_starts + samples.t_ends)
        origins = rays.origins[samples.ray_indices]
        directions = rays.directions[samples.ray_indices]
        rgb, sigma = self.field(origins + directions * t_mid[:, None], rays.directions, samples.ray_indices)
        deltas = (samples.t_ends - samples.t_starts) * directions.norm(dim=-1)
        if randomized:
            count = samples.ray_indices.shape[0] / max(len(rays), 1)
            # The buffer's own float32 arithmetic (mul_(0.9).add_(0.1 * count)), on the host.
            self._samples_per_ray = self._samples_per_ray * np.float32(0.9) + np.float32(0.1 * count)
            self.samples_per_ray.fill_(float(self._samples_per_ray))
        if self.render_uses_triton(rays.origins.device):
            from nerf.render_kernel import render_packed

            return render_packed(sigma.float(), rgb.float(), deltas, t_mid, samples.ray_indices, len(rays),
                                 self.background)
        weights = weights_packed(sigma.float(), deltas, samples.ray_indices)
        return composite_packed(weights, rgb.float(), t_mid, samples.ray_indices, len(rays), self.background)

    def render_uses_triton(self, device: torch.device) -> bool:
        """Whether samples on ``device`` are composited by the Triton kernels."""
        return uses_triton(self.config.render_kernel, device, "model.fast.render_kernel")


Model = SeedModel | NerfModel | FastModel


def build_model(config: ModelConfig, near: float, far: float, background: Tensor) -> Model:
    kinds = {"seed": SeedModel, "nerf": NerfModel, "fast": FastModel}
    return kinds[config.kind](getattr(config, config.kind), near, far, background)


def default_chunk(device: torch.device) -> int:
    """Rays per forward pass when ``render.chunk`` is null. On the CPU a pass's intermediates
    outgrow the caches: on the development machine 1024-ray passes made the video stage ~20%
    faster than 8192-ray ones (docs/results.md). GPUs keep 8192, the earlier default for every
    device: large passes keep a GPU busy, and a nerf-kind pass of 8192 rays x 192 samples
    still fits a small one (the full-size fast runs pass 16384)."""
    return 1024 if device.type == "cpu" else 8192


@torch.no_grad()
def render_image(model: Model, pose: Tensor, height: int, width: int, focal: float,
                 chunk: int | None = None, shift: float = 0.0) -> RenderOutput:
    """Renders one whole view (deterministic samples), ``chunk`` rays at a time (None: the
    device's :func:`default_chunk`); any ``chunk`` gives the same image up to float rounding.

    pose: (4, 4) on the model's device. Returns rgb (height, width, 3), depth and
    opacity (height, width). ``shift`` (>= -near) moves the depth range sampled from the
    model's [near, far] to [near + shift, far + shift]: for a camera that much farther from
    the scene than the cameras it was trained and tested from (:func:`nerf.camera_path.depth_shifts`),
    which would otherwise see nothing. Depths are still from the camera.
    """
    if shift < -model.near:
        raise ValueError(f"shift {shift} would sample behind the camera (near is {model.near})")
    rays = image_rays(pose, height, width, focal)
    if shift:  # the same sample points as [near + shift, far + shift] from the camera
        rays = Rays(rays.origins + shift * rays.directions, rays.directions)
    chunk = chunk or default_chunk(pose.device)
    parts = [model.render_rays(rays[i : i + chunk], randomized=False) for i in range(0, len(rays), chunk)]
    opacity = torch.cat([p.opacity for p in parts]).reshape(height, width)
    depth = torch.cat([p.depth for p in parts]).reshape(height, width)
    return RenderOutput(
        rgb=torch.cat([p.rgb for p in parts]).reshape(height, width, 3),
        depth=depth + shift * opacity if shift else depth,  # sum of weight * (t + shift)
        opacity=opacity,
    )
