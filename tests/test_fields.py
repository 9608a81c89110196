"""Radiance fields: shapes, ranges, and which of them let density depend on the view direction."""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_threads

from nerf.encoding import HashGrid, fourier_encode
from nerf.fields import FastField, NerfField, SeedField, SkipMLP, sigmoid, trunc_exp


def tiny_field(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "seed":
        field = SeedField(frequencies=2, width=32, depth=3, skip=1)
        with torch.no_grad():  # lift the density head off ReLU's zero so that sigma varies
            field.head.bias[3] = 1.0
        return field
    if kind == "nerf":
        return NerfField(pos_frequencies=3, dir_frequencies=2, width=32, depth=3, skip=1)
    grid = HashGrid(levels=3, features_per_level=2, log2_table_size=8, base_resolution=4,
                    max_resolution=16, bound=1.5)
    with torch.no_grad():  # a non-trivial grid, so that density varies with position
        grid.table.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    return FastField(grid, hidden=16, geo_features=7, sh_degree=3)


def points_and_directions(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(n, 3, generator=gen) * 2 - 1
    directions = torch.randn(n, 3, generator=gen) * 2  # not unit length, as rays give them
    return points, directions


@pytest.mark.parametrize("kind", ["seed", "nerf", "fast"])
def test_output_shapes_and_ranges(kind: str) -> None:
    field = tiny_field(kind)
    points, directions = points_and_directions()
    rgb, sigma = field(points, directions)
    assert rgb.shape == (256, 3) and sigma.shape == (256,)
    assert torch.all((rgb >= 0) & (rgb <= 1))
    assert torch.all(sigma >= 0)
    assert torch.isfinite(sigma).all()
    # Not degenerate: colours and densities vary across points.
    assert rgb.std(0).min() > 0 and sigma.std() > 0


@pytest.mark.parametrize("kind", ["nerf", "fast"])
def test_density_does_not_depend_on_direction(kind: str) -> None:
    field = tiny_field(kind)
    points, directions = points_and_directions()
    _, other_directions = points_and_directions(seed=1)
    rgb_a, sigma_a = field(points, directions)
    rgb_b, sigma_b = field(points, other_directions)
    assert torch.equal(sigma_a, sigma_b)
    assert not torch.allclose(rgb_a, rgb_b)  # colour does depend on it
    # Direction length does not matter (the fields normalise it).
    rgb_c, _ = field(points, directions * 3.0)
    assert torch.allclose(rgb_a, rgb_c, atol=1e-6)


def test_seed_field_density_can_depend_on_direction() -> None:
    field = tiny_field("seed")
    points, directions = points_and_directions()
    _, other_directions = points_and_directions(seed=1)
    _, sigma_a = field(points, directions)
    _, sigma_b = field(points, other_directions)
    assert not torch.allclose(sigma_a, sigma_b)


def test_fast_field_density_method_equals_forward_sigma() -> None:
    field = tiny_field("fast")
    points, directions = points_and_directions()
    assert torch.equal(field.density(points), field(points, directions)[1])


def test_fast_field_with_one_direction_per_ray_equals_one_per_sample() -> None:
    field = tiny_field("fast")
    points, _ = points_and_directions()
    _, ray_directions = points_and_directions(n=20, seed=2)
    ray_indices = torch.sort(torch.randint(20, (256,), generator=torch.Generator().manual_seed(3))).values
    per_sample = field(points, ray_directions[ray_indices])
    per_ray = field(points, ray_directions, ray_indices)
    assert torch.equal(per_ray[0], per_sample[0]) and torch.equal(per_ray[1], per_sample[1])


def test_skip_mlp_concatenates_input_at_skip_layer() -> None:
    mlp = SkipMLP(in_dim=5, width=8, depth=4, skip=2)
    assert [layer.in_features for layer in mlp.layers] == [5, 8, 8 + 5, 8]
    assert mlp(torch.rand(3, 5)).shape == (3, 8)


def skip_mlp_by_hand(mlp: SkipMLP, x: torch.Tensor) -> torch.Tensor:
    """The MLP written out: the skip layer's first ``width`` weight columns act on the hidden
    state, the rest on the input (the layout checkpoints and the fused seed kernel share)."""
    h = x
    for i, layer in enumerate(mlp.layers):
        width = layer.out_features
        if i == mlp.skip and i > 0:
            pre = h @ layer.weight[:, :width].T + x @ layer.weight[:, width:].T + layer.bias
        else:
            pre = h @ layer.weight.T + layer.bias
        h = pre.clamp(min=0)
    return h


def concatenated_layers(field: torch.nn.Module) -> list[torch.nn.Linear]:
    """The layers that take a hidden state concatenated with an encoding."""
    if isinstance(field, SeedField):
        return [field.mlp.layers[field.mlp.skip]]
    return [field.trunk.layers[field.trunk.skip], field.branch]


def bf16_pass(field: torch.nn.Module) -> tuple[list[torch.dtype], list[torch.Tensor]]:
    """Under CPU bf16 autocast: the dtypes the concatenating layers are fed, then the
    outputs and every parameter's gradient."""
    seen: list[torch.dtype] = []
    hooks = [layer.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
             for layer in concatenated_layers(field)]
    field.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rgb, sigma = field(*points_and_directions())
    (rgb.float().square().sum() + sigma.float().sum()).backward()
    for hook in hooks:
        hook.remove()
    return seen, [rgb, sigma, *(p.grad.clone() for p in field.parameters())]


@pytest.mark.parametrize("kind", ["seed", "nerf"])
def test_concatenations_stay_in_bf16_under_autocast_with_the_same_values(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Autocast's cat promotes [bf16 hidden, float32 encoding] to float32, and the next layer
    # casts it back: at the seed's 800,000 samples a step, a 1.2 GB copy and a cast each way.
    field = tiny_field(kind)
    seen, values = bf16_pass(field)
    assert seen == [torch.bfloat16] * len(concatenated_layers(field))
    # The old concatenation, for reference: the same outputs and gradients, bit for bit.
    monkeypatch.setattr("nerf.fields.cat_features", lambda h, x: torch.cat([h, x], dim=-1))
    seen_before, values_before = bf16_pass(field)
    assert seen_before == [torch.float32] * len(seen)
    assert all(torch.equal(a, b) for a, b in zip(values, values_before, strict=True))


@pytest.mark.parametrize("kind", ["seed", "nerf", "fast"])
def test_each_field_is_its_layers_composed_as_its_paper_says(kind: str) -> None:
    field = tiny_field(kind)
    points, directions = points_and_directions()
    unit = directions / directions.norm(dim=-1, keepdim=True)
    if kind == "seed":  # Fourier features (scale pi) of (position, direction), one MLP, a 4-wide head
        out = field.head(skip_mlp_by_hand(field.mlp, fourier_encode(torch.cat([points, directions], -1), 2,
                                                                    torch.pi)))
        rgb, sigma = torch.sigmoid(out[:, :3]), out[:, 3].clamp(min=0)
    elif kind == "nerf":  # density from the trunk; colour from a feature layer and the direction
        h = skip_mlp_by_hand(field.trunk, fourier_encode(points, 3))
        sigma = field.sigma(h)[:, 0].clamp(min=0)
        branch = field.branch(torch.cat([field.feature(h), fourier_encode(unit, 2)], -1)).clamp(min=0)
        rgb = torch.sigmoid(field.rgb(branch))
    else:  # instant-NGP: density exp(h - 1) (shifted as in its code), geometry features with SH
        h = field.density_net(field.grid(points))
        sigma = torch.exp(h[:, 0] - 1.0)
        rgb = torch.sigmoid(field.color_net(torch.cat([h[:, 1:], field.sh(unit)], -1)))
    got_rgb, got_sigma = field(points, directions)
    torch.testing.assert_close(got_rgb, rgb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_sigma, sigma, rtol=1e-5, atol=1e-6)
    # Every parameter shapes the output: each gets a gradient.
    (got_rgb.sum() + got_sigma.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters())


@pytest.mark.parametrize("kind", ["seed", "nerf"])
def test_a_negative_density_output_is_empty_space(kind: str) -> None:
    # ReLU, not a magnitude: a density layer pushed below zero gives sigma = 0 everywhere.
    field = tiny_field(kind)
    with torch.no_grad():
        (field.head.bias if kind == "seed" else field.sigma.bias)[-1] = -100.0
    points, directions = points_and_directions()
    assert torch.equal(field(points, directions)[1], torch.zeros(256))


def test_fast_field_mlps_are_instant_ngps_with_saturating_colours() -> None:
    # Linear-ReLU-Linear for density, Linear-ReLU-Linear-ReLU-Linear for colour, by hand from the
    # layers' weights; a large final bias drives the colours to 0 and 1 (white backgrounds).
    field = tiny_field("fast")
    d1, d2 = (m for m in field.density_net if isinstance(m, torch.nn.Linear))
    c1, c2, c3 = (m for m in field.color_net if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        c3.bias.copy_(torch.tensor([12.0, -12.0, 0.0]))
    points, directions = points_and_directions()
    h = d2(d1(field.grid(points)).relu())
    sh = field.sh(directions / directions.norm(dim=-1, keepdim=True))
    rgb = torch.sigmoid(c3(c2(c1(torch.cat([h[:, 1:], sh], -1)).relu()).relu()))
    got_rgb, got_sigma = field(points, directions)
    torch.testing.assert_close(got_rgb, rgb, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got_sigma, torch.exp(h[:, 0] - 1.0), rtol=1e-5, atol=1e-6)
    assert got_rgb[:, 0].min() > 0.999 and got_rgb[:, 1].max() < 1e-3


def test_fast_field_colour_trains_the_density_network_and_the_grid() -> None:
    # The geometry features carry the colour loss back into the density MLP and the hash table.
    field = tiny_field("fast")
    rgb, _ = field(*points_and_directions())
    rgb.sum().backward()
    last = [m for m in field.density_net if isinstance(m, torch.nn.Linear)][-1]
    assert last.weight.grad is not None and last.weight.grad[1:].abs().sum() > 0
    assert last.weight.grad[0].abs().sum() == 0  # the density row: not in the colour
    assert field.grid.table.grad is not None and field.grid.table.grad.abs().sum() > 0


def test_default_fields_feed_the_input_back_where_the_paper_and_the_seed_do() -> None:
    # NeRF (Mildenhall et al., its code's skips=[4]): the sixth layer takes [hidden, position];
    # the seed notebook: its sixth layer too. From the params' defaults, as the pipeline builds them.
    from nerf.config import NerfModelConfig, SeedModelConfig

    nerf = NerfModelConfig()
    trunk = NerfField(nerf.pos_frequencies, nerf.dir_frequencies, nerf.width, nerf.depth, nerf.skip).trunk
    assert [layer.in_features for layer in trunk.layers] == [63, 256, 256, 256, 256, 319, 256, 256]
    seed = SeedModelConfig()
    mlp = SeedField(seed.frequencies, seed.width, seed.depth, seed.skip).mlp
    assert [layer.in_features for layer in mlp.layers] == [126, 256, 256, 256, 256, 382, 256, 256]


def test_trunc_exp_value_and_clamped_gradient() -> None:
    x = torch.tensor([0.0, 1.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    assert torch.allclose(y, torch.exp(x.detach()))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.exp(torch.tensor([0.0, 1.0, 15.0])))


def test_sigmoid_is_the_logistic_function_with_its_gradient() -> None:
    x = torch.tensor([-100.0, -3.0, 0.0, 0.5, 4.0, 100.0], requires_grad=True)
    y = sigmoid(x)
    assert torch.allclose(y, torch.sigmoid(x.detach()), rtol=1e-6, atol=0)
    y.backward(torch.arange(1.0, 7.0))
    expected = torch.arange(1.0, 7.0) * torch.sigmoid(x.detach()) * (1 - torch.sigmoid(x.detach()))
    assert torch.allclose(x.grad, expected, rtol=1e-5, atol=0) and torch.isfinite(x.grad).all()


def test_sigmoid_has_the_same_bits_with_any_cpu_thread_count() -> None:
    """Where the threads split a tensor depends on their number; torch.sigmoid rounds a few
    elements at such a split differently (the control), nerf's sigmoid does not."""
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randn(150_003 + i, generator=gen) * 4 for i in range(8)]  # lengths no vector width divides
    results = {}
    for threads in (1, 2, 3):
        with cpu_threads(threads):
            results[threads] = [(torch.sigmoid(x), sigmoid(x)) for x in rows]
    torch_differs = ours_differs = False
    for threads in (2, 3):
        for (torch_1, ours_1), (torch_n, ours_n) in zip(results[1], results[threads], strict=True):
            torch_differs |= not torch.equal(torch_1, torch_n)
            ours_differs |= not torch.equal(ours_1, ours_n)
    assert not ours_differs
    assert torch_differs, ("torch.sigmoid now has the same bits with any thread count: "
                           "nerf.fields.sigmoid may go")
