"""The model kinds: tiny configs of each render batches of rays and whole images."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from test_rays import look_at

from nerf.config import FastModelConfig, ModelConfig, NerfModelConfig, SeedModelConfig
from nerf.models import FastModel, NerfModel, SeedModel, build_model, default_chunk, render_image
from nerf.rays import Rays, image_rays
from nerf.sampling import sample_pdf

NEAR, FAR = 2.0, 6.0
BACKGROUND = torch.tensor([0.2, 0.4, 0.6])

TINY = {
    "seed": SeedModelConfig(frequencies=2, width=16, depth=2, skip=1, samples=8),
    "nerf": NerfModelConfig(pos_frequencies=2, dir_frequencies=1, width=16, depth=2, skip=1,
                            coarse_samples=8, fine_samples=8, rays_per_batch=32),
    "fast": FastModelConfig(levels=2, features_per_level=2, log2_table_size=8, base_resolution=4,
                            max_resolution=8, hidden=16, geo_features=7, sh_degree=2,
                            grid_resolution=8, grid_update_every=2, steps_per_diagonal=32,
                            samples_per_batch=2048, max_rays_per_batch=256),
}


def tiny_model(kind: str, **overrides):
    torch.manual_seed(0)
    config = ModelConfig(kind=kind, **{kind: dataclasses.replace(TINY[kind], **overrides)})
    return build_model(config, NEAR, FAR, BACKGROUND)


POSE = look_at((0.5, -3.5, 2.0), (0.0, 0.0, 0.0))


@pytest.mark.parametrize(("kind", "cls"), [("seed", SeedModel), ("nerf", NerfModel), ("fast", FastModel)])
@pytest.mark.parametrize("randomized", [True, False])
def test_each_kind_renders_a_batch_of_rays(kind, cls, randomized) -> None:
    model = tiny_model(kind)
    assert isinstance(model, cls)
    rays = image_rays(POSE, 4, 5, 6.0)
    out = model.render_rays(rays, randomized=randomized, generator=torch.Generator().manual_seed(0))
    assert out.rgb.shape == (20, 3) and out.depth.shape == (20,) and out.opacity.shape == (20,)
    assert torch.isfinite(out.rgb).all() and torch.isfinite(out.depth).all()
    assert torch.all((out.opacity >= 0) & (out.opacity <= 1 + 1e-6))
    assert torch.all((out.rgb >= -1e-6) & (out.rgb <= 1 + 1e-6))
    if kind == "nerf":
        assert out.coarse_rgb is not None and out.coarse_rgb.shape == (20, 3)
    else:
        assert out.coarse_rgb is None
    # The loss reaches the parameters.
    out.rgb.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kind", ["seed", "nerf", "fast"])
def test_each_kind_renders_no_rays(kind) -> None:
    model = tiny_model(kind)
    rays = Rays(torch.zeros(0, 3), torch.zeros(0, 3))
    out = model.render_rays(rays, randomized=True, generator=torch.Generator().manual_seed(0))
    assert out.rgb.shape == (0, 3) and out.depth.shape == (0,) and out.opacity.shape == (0,)
    out.rgb.sum().backward()  # and back: nothing to learn, no error


def test_nerf_reports_its_coarse_pass_opacity() -> None:
    # The same coarse network alone (same seed, no fine samples) renders the same opacity,
    # and the coarse colour is its scene colour (at most its opacity) plus the background.
    rays = image_rays(POSE, 4, 5, 6.0)
    out = tiny_model("nerf").render_rays(rays, randomized=False)
    coarse_only = tiny_model("nerf", fine_samples=0).render_rays(rays, randomized=False)
    assert torch.equal(out.coarse_opacity, coarse_only.opacity)
    scene = out.coarse_rgb - (1 - out.coarse_opacity)[:, None] * BACKGROUND
    assert torch.all(scene >= -1e-6) and torch.all(scene <= out.coarse_opacity[:, None] + 1e-6)


def test_nerf_without_fine_samples_returns_the_coarse_pass() -> None:
    model = tiny_model("nerf", fine_samples=0)
    assert model.fine is None
    out = model.render_rays(image_rays(POSE, 2, 2, 3.0), randomized=False)
    assert out.coarse_rgb is None and out.rgb.shape == (4, 3)


@pytest.mark.parametrize("kind", ["seed", "nerf", "fast"])
def test_render_image_shapes_and_chunking_match_render_rays(kind) -> None:
    model = tiny_model(kind)
    h, w = 6, 5
    out = render_image(model, POSE, h, w, 5.0, chunk=7)
    assert out.rgb.shape == (h, w, 3) and out.depth.shape == (h, w) and out.opacity.shape == (h, w)
    # Deterministic samples: chunking changes nothing, and row-major pixels are image_rays'.
    with torch.no_grad():
        whole = model.render_rays(image_rays(POSE, h, w, 5.0), randomized=False)
    assert torch.allclose(out.rgb.reshape(-1, 3), whole.rgb, atol=1e-6)
    assert torch.allclose(out.depth.reshape(-1), whole.depth, atol=1e-5)


@pytest.mark.parametrize("kind", ["seed", "nerf", "fast"])
@pytest.mark.parametrize("shift", [1.5, -0.5, -NEAR])
def test_render_image_shift_samples_a_depth_range_that_much_farther(kind, shift) -> None:
    # The same as a model trained on [near + shift, far + shift]; not behind the camera.
    model = tiny_model(kind)
    with pytest.raises(ValueError, match="behind the camera"):
        render_image(model, POSE, 6, 5, 5.0, shift=-NEAR - 0.1)
    moved_model = copy.deepcopy(model)
    moved_model.near, moved_model.far = NEAR + shift, FAR + shift
    out = render_image(model, POSE, 6, 5, 5.0, shift=shift)
    expected = render_image(moved_model, POSE, 6, 5, 5.0)
    assert not torch.allclose(expected.rgb, render_image(model, POSE, 6, 5, 5.0).rgb, atol=1e-3)
    torch.testing.assert_close(out.rgb, expected.rgb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.opacity, expected.opacity, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.depth, expected.depth, atol=1e-4, rtol=1e-5)  # from the camera


def test_render_image_default_chunk_is_the_devices() -> None:
    assert default_chunk(torch.device("cpu")) == 1024 and default_chunk(torch.device("cuda")) == 8192
    # 40 x 30 = 1200 rays: two passes at the CPU's default, the same image as one pass.
    model = tiny_model("fast")
    out = render_image(model, POSE, 40, 30, 5.0)
    whole = render_image(model, POSE, 40, 30, 5.0, chunk=1200)
    assert torch.allclose(out.rgb, whole.rgb, atol=1e-6) and torch.allclose(out.depth, whole.depth, atol=1e-5)


def test_fast_model_ray_missing_the_cube_shows_the_background() -> None:
    model = tiny_model("fast")
    rays = Rays(torch.tensor([[0.0, 0.0, 4.0], [5.0, 5.0, 4.0]]),
                torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]))
    out = model.render_rays(rays, randomized=False)
    assert out.opacity[1] == 0.0 and torch.equal(out.rgb[1], BACKGROUND)
    assert out.opacity[0] > 0  # the new grid is all occupied and the field is not empty
    # A batch in which no ray has a sample at all still renders (and back-propagates).
    out = model.render_rays(rays[1:], randomized=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.rgb, BACKGROUND[None]) and out.opacity.tolist() == [0.0]
    out.rgb.sum().backward()


def test_fast_model_upkeep_updates_grid_and_batch_size() -> None:
    model = tiny_model("fast")
    assert model.occupancy.occupied.all()
    model.before_step(1)  # not an update step
    assert torch.all(model.occupancy.density == -1.0)
    model.before_step(2, torch.Generator().manual_seed(0))
    assert torch.all(model.occupancy.density >= 0)
    # Batch size: samples_per_batch over the running samples per ray, within [64, max].
    assert model.rays_per_batch() == 2048 // 32
    generator = torch.Generator().manual_seed(0)
    model.render_rays(image_rays(POSE, 8, 8, 6.0), randomized=True, generator=generator)
    assert float(model.samples_per_ray) != 32.0
    assert 64 <= model.rays_per_batch() <= 256


def test_seed_model_trains_on_whole_images_and_nerf_on_batches() -> None:
    assert tiny_model("seed").rays_per_batch() is None
    assert tiny_model("nerf").rays_per_batch() == 32


class ConstantField(torch.nn.Module):
    """A medium of one density and colour everywhere, which keeps the points it was asked
    about: volume rendering through it has closed forms."""

    def __init__(self, sigma: float, rgb: tuple[float, float, float] = (1.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.sigma, self.rgb = sigma, torch.tensor(rgb)
        self.calls: list[torch.Tensor] = []

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return torch.full(points.shape[:1], self.sigma)

    def forward(self, points, directions, ray_indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(points.detach().clone())
        return self.rgb.expand(points.shape[0], 3), self.density(points)


@pytest.mark.parametrize("kind", ["seed", "nerf"])
@pytest.mark.parametrize("length", [1.0, 2.0])
def test_dense_kinds_integrate_density_over_world_distance(kind, length) -> None:
    # Ray depths t are in units of the ray's direction (camera rays have z = -1, not unit
    # length); density is per world unit, so the optical depth from the first sample to far is
    # sigma * |d| * (far - t_0).
    model = tiny_model(kind)
    fields = ["field"] if kind == "seed" else ["coarse", "fine"]
    for name in fields:
        setattr(model, name, ConstantField(0.1))
    rays = Rays(torch.tensor([[0.0, 0.0, 4.0]]), torch.tensor([[0.0, 0.0, -length]]))
    out = model.render_rays(rays, randomized=False)
    first = NEAR + (FAR - NEAR) / 8 / 2  # the first of 8 bins' centres
    opacity = 1 - math.exp(-0.1 * length * (FAR - first))
    assert float(out.opacity[0]) == pytest.approx(opacity, rel=1e-5)
    expected_rgb = opacity * torch.tensor([1.0, 0.0, 0.0]) + (1 - opacity) * BACKGROUND
    torch.testing.assert_close(out.rgb[0], expected_rgb, rtol=1e-5, atol=1e-6)


def test_nerf_fine_pass_sees_the_coarse_and_fine_depths_in_order() -> None:
    model = tiny_model("nerf")
    model.coarse, model.fine = ConstantField(0.5), ConstantField(0.5)
    rays = Rays(torch.tensor([[0.0, 0.0, 4.0], [0.3, 0.1, 4.0]]),
                torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.0, -1.0]]))
    model.render_rays(rays, randomized=True, generator=torch.Generator().manual_seed(0))
    coarse = model.coarse.calls[-1].reshape(2, 8, 3)
    fine = model.fine.calls[-1].reshape(2, 16, 3)
    depth = lambda points: (rays.origins[:, None, 2] - points[..., 2])  # t, as the directions' z is -1
    assert torch.all(depth(fine)[:, 1:] >= depth(fine)[:, :-1])  # intervals need sorted depths
    for ray in range(2):  # every coarse depth is among the fine pass's
        assert all(torch.isclose(depth(fine)[ray], t).any() for t in depth(coarse)[ray])


@pytest.mark.parametrize("length", [1.0, 2.0])
def test_fast_depth_and_opacity_of_a_dense_medium(length) -> None:
    # March steps of dt (ray units) from t_0 = near, each read at its midpoint: a medium of
    # density sigma gives weights T_i (1 - q), q = exp(-sigma |d| dt), T_i = q^i, and depth
    # sum_i w_i (t_0 + (i + 1/2) dt) = t_0 + dt / 2 + dt q / (1 - q) once the ray is opaque.
    model = tiny_model("fast")
    model.field = ConstantField(40.0)
    rays = Rays(torch.tensor([[0.0, 0.0, 2.0 * length]]), torch.tensor([[0.0, 0.0, -length]]))
    out = model.render_rays(rays, randomized=False)
    dt = model.occupancy.step_size / length
    q = math.exp(-40.0 * length * dt)
    assert float(out.opacity[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(out.depth[0]) == pytest.approx(NEAR + dt / 2 + dt * q / (1 - q), rel=1e-5)


def test_fast_batch_size_stays_within_its_bounds_and_the_grid_waits_for_training() -> None:
    model = tiny_model("fast")
    model.before_step(0, torch.Generator().manual_seed(0))  # step 0: the field is untrained
    assert torch.all(model.occupancy.density == -1.0) and model.occupancy.occupied.all()
    model._samples_per_ray = np.float32(1e6)  # samples_per_batch / 1e6 rounds to 0 rays
    assert model.rays_per_batch() == 64
    model._samples_per_ray = np.float32(0.5)  # 4096 rays, over max_rays_per_batch
    assert model.rays_per_batch() == 256


def test_fields_are_every_network_a_kind_evaluates() -> None:
    # What train.compile compiles: the nerf kind's fine network too.
    seed, nerf, fast = (tiny_model(kind) for kind in ("seed", "nerf", "fast"))
    assert seed.fields() == [seed.field] and fast.fields() == [fast.field]
    assert nerf.fields() == [nerf.coarse, nerf.fine]
    coarse_only = tiny_model("nerf", fine_samples=0)
    assert coarse_only.fields() == [coarse_only.coarse]


def test_the_background_is_a_buffer_that_moves_and_saves_with_the_model() -> None:
    model = tiny_model("seed").to(torch.float64)  # as .to(device) moves it with the weights
    assert model.background.dtype == torch.float64
    assert torch.equal(model.state_dict()["background"], BACKGROUND.double())


@pytest.mark.parametrize(("kind", "name"), [("seed", "field"), ("nerf", "coarse")])
def test_training_renders_jitter_the_stratified_depths_and_test_renders_take_the_centres(kind, name) -> None:
    model = tiny_model(kind, **({"fine_samples": 0} if kind == "nerf" else {}))
    setattr(model, name, ConstantField(0.1))
    rays = Rays(torch.tensor([[0.0, 0.0, 4.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    for seed in (0, 1):
        model.render_rays(rays, randomized=True, generator=torch.Generator().manual_seed(seed))
    model.render_rays(rays, randomized=False)
    first, second, fixed = (4.0 - points[:, 2] for points in getattr(model, name).calls)
    assert not torch.allclose(first, second, atol=1e-3)
    torch.testing.assert_close(fixed, NEAR + (FAR - NEAR) * (torch.arange(8) + 0.5) / 8)


def test_nerf_training_renders_draw_their_fine_depths_at_random() -> None:
    # Test renders put the fine samples at fixed levels of the coarse weights' CDF; training
    # renders draw the levels, as they jitter the coarse depths.
    model = tiny_model("nerf")
    model.coarse, model.fine = ConstantField(0.0), ConstantField(0.0)
    rays = Rays(torch.tensor([[0.0, 0.0, 4.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    model.render_rays(rays, randomized=True, generator=torch.Generator().manual_seed(0))
    coarse, both = (4.0 - field.calls[-1][:, 2] for field in (model.coarse, model.fine))
    fine = [t for t in both if not torch.isclose(coarse, t).any()]
    bins = torch.cat([coarse, torch.tensor([FAR])])[None]
    fixed = sample_pdf(bins, torch.zeros(1, 8), 8, randomized=False)[0]
    assert len(fine) == 8 and not all(torch.isclose(fixed, t, atol=1e-5).any() for t in fine)


def test_fast_batch_size_follows_a_running_mean_of_samples_per_ray() -> None:
    # Each training render moves the mean a tenth of the way to its own samples per ray.
    model = tiny_model("fast", max_rays_per_batch=8192)
    rays = image_rays(POSE, 8, 8, 6.0)
    samples = model.occupancy.march(rays, NEAR, FAR, True, torch.Generator().manual_seed(0))
    count = samples.ray_indices.shape[0] / len(rays)
    model.render_rays(rays, randomized=True, generator=torch.Generator().manual_seed(0))
    mean = 0.9 * 32 + 0.1 * count
    assert float(model.samples_per_ray) == pytest.approx(mean, rel=1e-6) and count != 32
    assert model.rays_per_batch() == int(2048 / mean)
    # Fewer than one sample per ray (most rays miss): at most samples_per_batch rays.
    model._samples_per_ray = np.float32(0.5)
    assert model.rays_per_batch() == 2048
