"""Training: overfitting real lego crops, seeded reproducibility, the rate schedule, checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, cpu_threads, shared_path

from nerf.config import FastModelConfig, ModelConfig, NerfModelConfig, SplitConfig, TrainConfig
from nerf.errors import DataError, TrainingError, run_stage
from nerf.images import comparison, enlarge, error_image, panels_row, read_png, to_uint8
from nerf.metrics import psnr
from nerf.models import build_model, render_image
from nerf.rays import image_rays
from nerf.rendering import RenderOutput
from nerf.scene import Scene
from nerf.split import split_scene
from nerf.training import (
    Target,
    arithmetic,
    colour_loss,
    evaluate_views,
    learning_rate,
    load_checkpoint,
    machine,
    pick_device,
    processor,
    save_checkpoint,
    schedule_progress,
    tf32_matmuls,
    train,
    training_rays,
    validation_image,
)
from nerf.views import Views

CPU = torch.device("cpu")
NEAR, FAR = 2.0, 6.0

# Small enough for a few seconds of CPU training: 4 levels up to 64 cells, a 32^3 occupancy
# grid and 48 march steps across the cube's diagonal.
FAST = FastModelConfig(
    levels=4, features_per_level=2, log2_table_size=14, base_resolution=8, max_resolution=64,
    hidden=32, geo_features=7, sh_degree=2, grid_resolution=32, grid_update_every=8,
    steps_per_diagonal=48, samples_per_batch=2048, max_rays_per_batch=1024, lr=3e-2, lr_final=3e-3,
)


@pytest.fixture(scope="module")
def crops() -> Views:
    """4 real lego views (tiny_lego.npz, 100x100) cropped to their central 32x32 pixels: the
    principal point stays at the centre, so the focal length is unchanged."""
    with np.load(shared_path("tiny_lego.npz")) as data:
        index = [0, 20, 40, 60]
        images = data["images"][index, 34:66, 34:66].astype(np.float32)
        poses = data["poses"][index].astype(np.float32)
        focal = float(data["focal"])
    return Views(images, poses, focal, tuple(f"train/r_{i}" for i in index), np.zeros(3, np.float32))


@pytest.fixture(scope="module")
def rgba_views(lego_frames) -> Views:
    """11 real lego views (the Blender folder's RGBA PNGs at 40x40) on white, with alpha."""
    angle, frames = lego_frames
    images = np.stack([np.asarray(image, np.float32) / 255 for _, image in frames])
    poses = np.array([matrix for matrix, _ in frames], np.float32)
    focal = 0.5 * 40 / math.tan(0.5 * angle)
    names = tuple(f"train/r_{i}" for i in range(len(frames)))
    scene = Scene(images, poses, focal, names, ("train",) * len(frames))
    config = SplitConfig(strategy="every_nth", every_nth=len(frames), background="white", val_views=0)
    return split_scene(scene, config)[0]["train"]


def fast_model(seed: int = 0, background: float = 0.0, **overrides):
    torch.manual_seed(seed)  # train() seeds the batches; initialisation is the caller's
    config = ModelConfig(kind="fast", fast=dataclasses.replace(FAST, **overrides))
    return build_model(config, NEAR, FAR, torch.full((3,), background)), config


def train_config(steps: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(steps=steps, val_every=10_000, device="cpu", seed=seed)


def test_crop_rays_pass_through_the_image_centre_like_the_full_view(crops) -> None:
    # Cropping keeps the principal point: the crop's central corner-of-4 pixels see the same
    # directions as the full 100x100 image's pixels (34 + i, 34 + j).
    pose = torch.from_numpy(crops.poses[0])
    crop = image_rays(pose, 32, 32, crops.focal)
    full = image_rays(pose, 100, 100, crops.focal)
    rows = (torch.arange(32)[:, None] + 34) * 100 + torch.arange(32)[None, :] + 34
    assert torch.allclose(crop.directions, full.directions[rows.reshape(-1)], atol=1e-6)


def test_training_rays_are_image_rays_with_their_colours(crops) -> None:
    data = training_rays(crops, CPU)
    per_view = 32 * 32
    assert data.pixels_per_view == per_view and len(data.rays) == 4 * per_view
    for v in (0, 3):
        rays = image_rays(torch.from_numpy(crops.poses[v]), 32, 32, crops.focal)
        sl = slice(v * per_view, (v + 1) * per_view)
        assert torch.allclose(data.rays.origins[sl], rays.origins)
        assert torch.allclose(data.rays.directions[sl], rays.directions)
        assert torch.equal(data.colors[sl], torch.from_numpy(crops.images[v]).reshape(-1, 3))


def test_batches_draw_from_every_view_and_pixel(crops) -> None:
    data = training_rays(crops.subset([0, 1, 2]), CPU)
    generator = torch.Generator().manual_seed(0)
    # Whole views (the seed's batches): each an image-major block, every view drawn.
    drawn = set()
    for _ in range(60):
        index = data.batch(None, generator)
        view = int(index[0]) // data.pixels_per_view
        assert torch.equal(index, torch.arange(view * 1024, (view + 1) * 1024))
        drawn.add(view)
    assert drawn == {0, 1, 2}
    # Random pixels: every one of the 3 x 1024 reachable, the last included.
    counts = torch.bincount(torch.cat([data.batch(4096, generator) for _ in range(20)]), minlength=3 * 1024)
    assert counts.shape == (3 * 1024,) and bool((counts > 0).all())


def test_fast_model_overfits_real_crops(crops) -> None:
    model, _ = fast_model()
    before = evaluate_views(model, crops, 4096, CPU)
    summary = train(model, crops, None, train_config(150), CPU, progress=False)
    after = evaluate_views(model, crops, 4096, CPU)
    assert summary.steps == 150 and math.isfinite(summary.loss)
    # An untrained field renders a dim grey blur (~12.8 dB); 150 steps reach ~20 dB.
    assert after > before + 5.0, (before, after)
    assert summary.train_psnr > before + 4.0
    # evaluate_views puts the model back in training mode and matches a direct computation.
    assert model.training
    with torch.no_grad():
        out = render_image(model, torch.from_numpy(crops.poses[1]), 32, 32, crops.focal, 4096)
    direct = float(psnr(out.rgb.clamp(0, 1), torch.from_numpy(crops.images[1])))
    assert direct > before + 4.0


def _opacity_error(model, views: Views) -> float:
    """Mean |rendered opacity - alpha| over every pixel of ``views``."""
    errors = []
    with torch.no_grad():
        for pose, alpha in zip(views.poses, views.alpha, strict=True):
            out = render_image(model, torch.from_numpy(pose), views.height, views.width, views.focal, 4096)
            errors.append(float((out.opacity.reshape(alpha.shape) - torch.from_numpy(alpha)).abs().mean()))
    return sum(errors) / len(errors)


def test_validation_psnr_is_logged_every_val_every_steps_and_at_the_end(crops, tmp_path) -> None:
    # Real DVCLive logs: the curve has a point at steps 4, 8 and 10 (the end), each the mean
    # PSNR over every validation view, and the summary holds the last one.
    from dvclive import Live

    model, _ = fast_model()
    train_views, val_views = crops.subset([0, 1, 2]), crops.subset([3, 1])
    config = dataclasses.replace(train_config(10), log_every=2, val_every=4)
    with Live(str(tmp_path / "live"), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        summary = train(model, train_views, val_views, config, CPU, live=live, progress=False)
    rows = (tmp_path / "live/plots/metrics/val/psnr.tsv").read_text().splitlines()
    assert rows[0] == "step\tpsnr" and [int(row.split()[0]) for row in rows[1:]] == [4, 8, 10]
    assert float(rows[-1].split()[1]) == pytest.approx(summary.val_psnr)
    by_view = [evaluate_views(model, val_views.subset([i]), 4096, CPU) for i in range(2)]
    assert summary.val_psnr == pytest.approx(sum(by_view) / 2)
    assert by_view[0] != pytest.approx(by_view[1])  # two different views, both counted
    seconds = (tmp_path / "live/plots/metrics/val/seconds.tsv").read_text().splitlines()
    assert [int(row.split()[0]) for row in seconds[1:]] == [4, 8, 10]
    assert float(seconds[-1].split()[1]) == pytest.approx(summary.seconds)


def test_each_validation_logs_the_first_validation_view_as_an_image(crops, tmp_path) -> None:
    # DVCLive's sequence pattern: images/val/<step>.png at steps 4, 8 and 10 (the end), each
    # truth | render | error of the first validation view as rendered at that step.
    from dvclive import Live

    model, _ = fast_model()
    train_views, val_views = crops.subset([0, 1, 2]), crops.subset([3, 1])
    config = dataclasses.replace(train_config(10), log_every=2, val_every=4)
    with Live(str(tmp_path / "live"), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        train(model, train_views, val_views, config, CPU, live=live, progress=False)
    folder = tmp_path / "live/plots/images/val"
    assert sorted(p.name for p in folder.iterdir()) == ["10.png", "4.png", "8.png"]
    with torch.no_grad():
        final = render_image(model, torch.from_numpy(val_views.poses[0]), 32, 32, val_views.focal, 4096)
    logged = to_uint8(read_png(folder / "10.png"))
    np.testing.assert_array_equal(logged, validation_image(val_views.images[0], final.rgb.numpy()))
    # Under its captions, truth | render | error, each pixel an 8x8 block (32 * 8 = 256).
    truth, rgb = val_views.images[0], final.rgb.clamp(0, 1).numpy()
    strip = to_uint8(enlarge(panels_row([truth, rgb, error_image(truth, rgb)]), 8))
    np.testing.assert_array_equal(logged[-256:], strip)
    assert not np.array_equal(to_uint8(read_png(folder / "4.png"))[-256:], strip)  # an earlier model's


def test_validation_images_of_wide_views_are_averaged_down_and_of_narrow_ones_enlarged() -> None:
    # 600 wide: each panel averaged over 3x3 blocks to 200 (at most PREVIEW_WIDTH = 256).
    truth = np.random.default_rng(0).random((300, 600, 3)).astype(np.float32)
    image = validation_image(truth, truth)
    assert image.dtype == np.uint8 and image.shape[1:] == (3 * 200 + 2 * 4, 3)
    averaged = truth.reshape(100, 3, 200, 3, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(image[-100:, :200], to_uint8(averaged))
    assert (image[:-100] == 255).mean() > 0.8  # the captions' row above: dark text on white
    small = validation_image(truth[:32, :32], truth[:32, :32])
    assert small.shape[1] == 8 * (3 * 32 + 2 * 4)  # narrow views enlarged, each pixel a block
    np.testing.assert_array_equal(small[-256:, :256], to_uint8(enlarge(truth[:32, :32], 8)))


def test_random_backgrounds_teach_the_coverage_of_rgba_views(rgba_views) -> None:
    # On a fixed white background, white-ish parts and empty space are interchangeable; with
    # a random colour behind each training ray only the true coverage fits. Measured at 300
    # steps over init seeds 0-2: |opacity - alpha| 0.033-0.039 random, 0.055-0.058 fixed.
    errors = {}
    for random_background in (False, True):
        model, _ = fast_model(background=1.0)
        config = dataclasses.replace(train_config(300), random_background=random_background)
        train(model, rgba_views, None, config, CPU, progress=False)
        errors[random_background] = _opacity_error(model, rgba_views)
    assert errors[True] < 0.8 * errors[False] and errors[True] < 0.05, errors


def test_colour_loss_moves_every_pass_and_the_target_onto_the_new_backgrounds() -> None:
    gen = torch.Generator().manual_seed(0)
    scene, coverage = torch.rand(6, 3, generator=gen) * 0.5, torch.rand(6, generator=gen)
    coarse, coarse_coverage = torch.rand(6, 3, generator=gen) * 0.5, torch.rand(6, generator=gen)
    rendered_on, target_on = torch.tensor([0.2, 0.4, 0.6]), torch.ones(3)
    on = lambda colour, opacity, background: colour + (1 - opacity)[:, None] * background
    out = RenderOutput(on(scene, coverage, rendered_on), torch.zeros(6), coverage,
                       on(coarse, coarse_coverage, rendered_on), coarse_coverage)
    new = torch.rand(6, 3, generator=gen)
    target = Target(on(scene, coverage, target_on), target_on, coverage, new)
    mse, loss = colour_loss(out, rendered_on, target)
    # The fine pass is the target's scene: nothing to learn, whatever the backgrounds.
    assert float(mse) == pytest.approx(0.0, abs=1e-12)
    expected = torch.nn.functional.mse_loss(on(coarse, coarse_coverage, new), on(scene, coverage, new))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5) and float(expected) > 1e-3
    # Without new backgrounds, the colours are compared as rendered.
    mse, loss = colour_loss(out, rendered_on, Target(target.rgb, target_on))
    assert float(mse) == pytest.approx(float(torch.nn.functional.mse_loss(out.rgb, target.rgb)), rel=1e-6)
    assert float(mse) > 1e-3 and float(loss) > float(mse)


def test_random_backgrounds_change_nothing_for_rgb_views(crops) -> None:
    # The embedded sample has no alpha: no extra random draws, bit-identical training.
    weights = []
    for random_background in (False, True):
        model, _ = fast_model()
        train(model, crops, None, dataclasses.replace(train_config(20), random_background=random_background),
              CPU, progress=False)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _output_dtypes(module: torch.nn.Module) -> list[torch.dtype]:
    """Records the dtype of every output of ``module`` (a forward hook)."""
    seen: list[torch.dtype] = []
    module.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    return seen


def test_bf16_autocast_runs_the_networks_in_bf16_and_still_learns(crops) -> None:
    # The CUDA default for seed and nerf; the CPU runs the same autocast path when asked.
    model, _ = fast_model()
    dtypes = _output_dtypes(model.field.density_net)
    before = evaluate_views(model, crops, 4096, CPU)
    config = dataclasses.replace(train_config(150), precision="bf16")
    summary = train(model, crops, None, config, CPU, progress=False)
    after = evaluate_views(model, crops, 4096, CPU)
    # Training steps ran in bf16, the evaluation renders (and occupancy updates) in float32.
    assert torch.bfloat16 in dtypes and torch.float32 in dtypes
    assert model.field.grid.table.dtype == torch.float32  # weights stay float32
    assert math.isfinite(summary.loss) and after > before + 5.0, (before, after)


def test_precision_auto_is_float32_on_the_cpu_bf16_for_seed_and_tf32_for_fast_on_cuda() -> None:
    seed = build_model(ModelConfig(kind="seed"), NEAR, FAR, torch.zeros(3))
    fast, _ = fast_model()
    cuda = torch.device("cuda")
    assert arithmetic("auto", CPU, seed) == arithmetic("auto", CPU, fast) == "fp32"
    assert arithmetic("auto", cuda, fast) == "tf32"  # bf16 measured slower there
    assert arithmetic("tf32", CPU, fast) == "fp32"  # TF32 is a CUDA tensor-core format
    assert arithmetic("tf32", cuda, seed) == "tf32" and arithmetic("fp32", cuda, fast) == "fp32"
    assert arithmetic("bf16", CPU, fast) == "bf16" and arithmetic("fp32", cuda, seed) == "fp32"
    if torch.cuda.is_available():
        assert arithmetic("auto", cuda, seed) == ("bf16" if torch.cuda.is_bf16_supported() else "tf32")


def test_tf32_matmuls_sets_the_matmul_precision_for_its_block_only() -> None:
    assert torch.get_float32_matmul_precision() == "highest"
    with tf32_matmuls(False):
        assert torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(RuntimeError, match="inside"), tf32_matmuls(True):
        assert torch.get_float32_matmul_precision() == "high"
        raise RuntimeError("inside")
    assert torch.get_float32_matmul_precision() == "highest"


def test_tf32_precision_leaves_cpu_matmuls_in_full_float32(crops) -> None:
    # The CPU has no TF32: asking for it must not change a CPU run (reproducible metrics).
    model, _ = fast_model()
    seen: set[str] = set()
    model.field.density_net.register_forward_hook(lambda *_: seen.add(torch.get_float32_matmul_precision()))
    train(model, crops, None, dataclasses.replace(train_config(20), precision="tf32"), CPU, progress=False)
    assert seen == {"highest"}


def test_compiled_fields_train_like_eager_ones(crops) -> None:
    # train.compile wraps the fields' forward in torch.compile (dynamic shapes: the number
    # of samples changes every step); the CPU compiles the same graphs as CUDA would.
    from torch._dynamo.utils import counters

    losses, states, graphs = [], [], []
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        model, _ = fast_model()
        config = dataclasses.replace(train_config(12), log_every=12, compile=compiled)
        losses.append(train(model, crops, None, config, CPU, progress=False).loss)
        states.append(model.state_dict())
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] == 0 and graphs[1] > 0  # the second run really ran compiled graphs
    assert states[0].keys() == states[1].keys()  # checkpoints of compiled runs load anywhere
    assert math.isfinite(losses[1]) and losses[1] == pytest.approx(losses[0], rel=1e-3)
    table = [s["field.grid.table"] for s in states]
    assert torch.allclose(table[0], table[1], atol=1e-4)
    assert not torch.equal(table[1], fast_model()[0].state_dict()["field.grid.table"])  # it trained


def _run(crops, model_seed: int, train_seed: int, global_seed: int, steps: int = 20):
    model, _ = fast_model(model_seed)
    # The global stream after initialisation must not matter: training draws from its own.
    torch.manual_seed(global_seed)
    summary = train(model, crops, None, train_config(steps, train_seed), CPU, progress=False)
    return summary.loss, {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_is_bit_identical_and_different_seeds_differ(crops) -> None:
    # 20 steps cross two occupancy-grid updates (every 8 steps), which use the seeded stream too.
    loss_a, state_a = _run(crops, 0, 0, global_seed=100)
    loss_b, state_b = _run(crops, 0, 0, global_seed=200)
    assert loss_a == loss_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    loss_c, state_c = _run(crops, 0, 1, global_seed=100)  # same initialisation, another batch stream
    assert loss_c != loss_a
    assert not torch.equal(state_c["field.grid.table"], state_a["field.grid.table"])


def test_resuming_a_checkpointed_state_is_bit_identical_to_an_uninterrupted_run(crops, tmp_path) -> None:
    # 21 steps: occupancy updates at steps 8 and 16 (seeded draws), checkpoints every 5 steps,
    # log every 3 steps so that the state carries a part-summed loss (15 is not a log step).
    config = dataclasses.replace(train_config(21), log_every=3, checkpoint_every=5)
    model, _ = fast_model(0)
    full_saved: list[dict] = []
    full = train(model, crops, None, config, CPU, progress=False, on_checkpoint=full_saved.append)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    # The finished run checkpoints its last step too (21), so a rerun finds nothing to train.
    assert [s["step"] for s in full_saved] == [5, 10, 15, 20, 21]

    saved: list[dict] = []
    model, _ = fast_model(0)
    # Stop right after the step-15 checkpoint, as a kill would; keep it on disk and back.
    stopped = train(model, crops, None, config, CPU, progress=False,
                    on_checkpoint=saved.append, on_step=lambda step, seconds: step == 15)
    assert stopped.steps == 15 and [s["step"] for s in saved] == [5, 10, 15]
    assert saved[-1]["loss_count"] == 0 and saved[1]["loss_count"] == 1  # 10 = 9 + 1 unlogged step
    torch.save(saved[1], tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)

    # Resume from step 10 in a model built with another initialisation: the state replaces it.
    model, _ = fast_model(7)
    torch.manual_seed(123)  # nor does the global stream matter
    resumed = train(model, crops, None, config, CPU, progress=False, resume=state)
    assert resumed.steps == 21 and resumed.loss == full.loss
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)
    assert resumed.seconds > float(state["seconds"])  # time carries over
    # The part-summed loss carries over too: the first log after the resume (step 12) averages
    # steps 10, 11 and 12, as the uninterrupted run's does.
    model, _ = fast_model(0)
    at_12 = train(model, crops, None, config, CPU, progress=False, on_step=lambda step, seconds: step == 12)
    model, _ = fast_model(7)
    # (From the same state object: a resume leaves the state it was given unchanged.)
    resumed_to_12 = train(model, crops, None, config, CPU, progress=False, resume=state,
                          on_step=lambda step, seconds: step == 12)
    assert resumed_to_12.steps == 12 and resumed_to_12.loss == at_12.loss

    # The comparison is sensitive: a resume that loses the random stream diverges.
    model, _ = fast_model(0)
    broken = dict(state, generator=torch.Generator().manual_seed(99).get_state())
    train(model, crops, None, config, CPU, progress=False, resume=broken)
    assert not torch.equal(model.state_dict()["field.grid.table"], expected["field.grid.table"])


def test_learning_rate_schedule_endpoints() -> None:
    assert learning_rate(0.0, 1e-2, 5e-4) == pytest.approx(1e-2)
    assert learning_rate(1.0, 1e-2, 5e-4) == pytest.approx(5e-4)
    # Exponential: halfway is the geometric mean, and it decreases monotonically.
    assert learning_rate(0.5, 1e-2, 5e-4) == pytest.approx(math.sqrt(1e-2 * 5e-4))
    rates = [learning_rate(schedule_progress(s, 100), 1e-2, 5e-4) for s in range(101)]
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert learning_rate(0.7, 3e-3, 3e-3) == pytest.approx(3e-3)  # constant when equal
    assert schedule_progress(0, 0) == 0.0  # no division by zero


def test_schedule_progress_follows_steps_or_the_time_budget_whichever_is_further() -> None:
    assert schedule_progress(25, 100) == 0.25
    assert schedule_progress(25, 100, seconds=50.0) == 0.25  # no budget: steps alone
    assert schedule_progress(25, 100, seconds=50.0, budget=100.0) == 0.5
    assert schedule_progress(75, 100, seconds=50.0, budget=100.0) == 0.75
    assert schedule_progress(10, 100, seconds=150.0, budget=100.0) == 1.0  # never past the end


def test_the_progress_bar_ends_at_the_last_step(crops, capsys) -> None:
    model, _ = fast_model()
    train(model, crops, None, dataclasses.replace(train_config(6), log_every=2), CPU, progress=True)
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "100%" in bar and "6/6" in bar and "psnr=" in bar, bar


def test_the_bar_closes_before_the_final_validation_which_has_its_own(crops, capsys) -> None:
    model, _ = fast_model()
    train(model, crops, crops.subset([0, 1]), train_config(6), CPU, progress=True)
    err = capsys.readouterr().err
    assert err.rindex("6/6") < err.index("validate")  # the bar's rate is training's alone
    assert "/2 [" in err.split("validate")[-1]  # counting the 2 views (cleared when done)


def _bar_rate(line: str) -> float:
    """Steps per second from a tqdm line: ``12.3step/s``, or below one ``4.56s/step``."""
    if match := re.search(r"([\d.]+)step/s", line):
        return float(match[1])
    return 1 / float(re.search(r"([\d.]+)s/step", line)[1])


def test_the_bars_rate_is_trainings_with_validation_pauses_left_out(crops, capsys) -> None:
    # Validating the 4 full 100x100 views takes several training steps' time, after every step.
    with np.load(shared_path("tiny_lego.npz")) as data:
        full = Views(data["images"][:4].astype(np.float32), data["poses"][:4].astype(np.float32),
                     float(data["focal"]), tuple(f"val/r_{i}" for i in range(4)), np.zeros(3, np.float32))
    model, _ = fast_model()
    config = dataclasses.replace(train_config(12), val_every=1, log_every=1)
    summary = train(model, crops, full, config, CPU, progress=True)
    err = capsys.readouterr().err
    bar = err[:err.rindex("12/12")].split("\r")[-1] + err[err.rindex("12/12"):].split("\r")[0]
    training_rate = summary.steps / summary.seconds
    # With the pauses counted it read 1.8 steps/s for 113 (2-core AMD EPYC); without, 125.
    assert _bar_rate(bar) > 0.6 * training_rate, (bar, training_rate)


def test_the_bar_shows_the_last_validation_psnr_once_there_is_one(crops, capsys) -> None:
    model, _ = fast_model()
    config = dataclasses.replace(train_config(6), val_every=3, log_every=1)
    train(model, crops, crops.subset([0]), config, CPU, progress=True)
    lines = {line.split("/6")[0][-1]: line for line in capsys.readouterr().err.split("\r") if "/6 [" in line}
    assert "val_psnr" not in lines["3"] and "psnr=" in lines["3"]  # logged before the first validation
    assert re.search(r"psnr=[\d.]+, val_psnr=[\d.]+", lines["6"]), lines["6"]
    train(fast_model()[0], crops, None, config, CPU, progress=True)
    assert "val_psnr" not in capsys.readouterr().err  # no validation views


def test_a_stopped_run_ends_the_bars_line_so_that_the_error_starts_its_own(crops, capsys) -> None:
    def stop(step: int, seconds: float) -> bool:
        if step == 3:
            raise KeyboardInterrupt  # Ctrl-C
        return False

    model, _ = fast_model()
    with pytest.raises(SystemExit):
        run_stage(lambda: train(model, crops, None, train_config(6), CPU, progress=True, on_step=stop))
    lines = capsys.readouterr().err.split("\n")
    assert lines[-2:] == ["error: interrupted", ""] and "3/6" in lines[-3], lines


def test_with_a_time_budget_the_bar_counts_seconds_of_training(crops, capsys) -> None:
    model, _ = fast_model()
    config = dataclasses.replace(train_config(steps=100_000), time_budget=1.0, log_every=2)
    summary = train(model, crops, None, config, CPU, progress=True)
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "100%" in bar and "1.0/1.0 s of training" in bar and f"step={summary.steps}" in bar, bar
    assert "100000" not in bar


def test_with_a_time_budget_the_bars_step_moves_between_logs(crops, capsys) -> None:
    # The bar counts seconds; the step beside them was set at logs only (at log_every 10 and
    # nerf's 0.1 steps/s, one change in 100 s). A budget under a second read "0/0 s".
    model, _ = fast_model()
    config = dataclasses.replace(train_config(steps=100_000), time_budget=0.8, log_every=100_000)
    train(model, crops, None, config, CPU, progress=True)
    lines = [line for line in capsys.readouterr().err.split("\r") if "s of training" in line]
    assert "0.8/0.8 s of training" in lines[-1], lines[-1]
    steps = [int(match[1]) for line in lines[:-1] if (match := re.search(r"step=(\d+)", line))]
    assert len(set(steps)) >= 2 and steps == sorted(steps), lines


def test_a_time_budget_stops_training_and_decays_the_rate_over_it(crops, tmp_path) -> None:
    from dvclive import Live

    model, _ = fast_model()
    config = dataclasses.replace(train_config(steps=100_000), time_budget=3.0, log_every=2)
    with Live(str(tmp_path / "live"), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        summary = train(model, crops, None, config, CPU, live=live, progress=False)
    assert 10 < summary.steps < 100_000
    assert 3.0 <= summary.seconds < 3.0 + 1.0  # stopped after the step that spent the budget
    # The logged rate (each log's last step) fell with time, from lr towards lr_final
    # (3e-2 -> 3e-3), down to within a few steps' time of the end.
    rows = (tmp_path / "live/plots/metrics/train/learning_rate.tsv").read_text().splitlines()[1:]
    steps, rates = zip(*((int(step), float(lr)) for step, lr in (row.split() for row in rows)))
    assert steps[-1] == summary.steps and rates[0] < FAST.lr
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert rates[-1] < FAST.lr * (FAST.lr_final / FAST.lr) ** 0.8
    assert math.isfinite(summary.loss)


def test_a_state_that_spent_the_budget_trains_no_further(crops) -> None:
    config = dataclasses.replace(train_config(steps=50), time_budget=1.0, checkpoint_every=5)
    model, _ = fast_model()
    saved: list[dict] = []
    train(model, crops, None, config, CPU, progress=False, on_checkpoint=saved.append,
          on_step=lambda step, seconds: step == 5)
    spent = dict(saved[-1], seconds=1.5)  # as if those 5 steps had taken 1.5 s
    model, _ = fast_model()
    summary = train(model, crops, None, config, CPU, progress=False, resume=spent)
    assert summary.steps == 5 and summary.seconds == 1.5
    assert all(torch.equal(model.state_dict()[k], v) for k, v in spent["model"].items())


def test_an_empty_validation_split_trains_without_validating(crops) -> None:
    # split.val_views: 0 gives validation Views of no views.
    model, _ = fast_model()
    summary = train(model, crops, crops.subset([]), train_config(3), CPU, progress=False)
    assert summary.steps == 3 and summary.val_psnr is None


def _logged_rates(crops, folder, lr: float | None) -> list[float]:
    from dvclive import Live

    model, _ = fast_model()
    config = dataclasses.replace(train_config(steps=6), lr=lr, log_every=1)
    with Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        train(model, crops, None, config, CPU, live=live, progress=False)
    rows = (folder / "plots/metrics/train/learning_rate.tsv").read_text().splitlines()[1:]
    return [float(row.split()[1]) for row in rows]


def test_train_lr_scales_the_kinds_whole_schedule(crops, tmp_path) -> None:
    own = _logged_rates(crops, tmp_path / "own", None)
    scaled = _logged_rates(crops, tmp_path / "scaled", 1e-2)
    assert len(own) == len(scaled) == 6
    assert own[0] == pytest.approx(FAST.lr)  # 3e-2, decaying
    assert all(a > b for a, b in itertools.pairwise(own))
    # train.lr replaces the kind's lr, and lr_final keeps its ratio to it.
    assert scaled == pytest.approx([rate * 1e-2 / FAST.lr for rate in own], rel=1e-6)


def test_a_non_finite_loss_stops_training_and_says_what_to_change(crops) -> None:
    model, _ = fast_model()
    with torch.no_grad():
        model.field.color_net[-1].bias.fill_(math.nan)  # every colour, so every loss, is NaN
    config = dataclasses.replace(train_config(steps=20), log_every=5)
    with pytest.raises(TrainingError, match=r"^training diverged at step 5 \(loss nan\); lower train\.lr$"):
        train(model, crops, None, config, CPU, progress=False)


def _sphere(points: torch.Tensor) -> torch.Tensor:
    return (points.norm(dim=-1) < 0.6).float() * 100.0


def test_checkpoint_round_trip_renders_the_same_image(crops, tmp_path) -> None:
    model, config = fast_model(3)
    train(model, crops, None, train_config(10), CPU, progress=False)
    # A sparse occupancy grid, so that the render depends on the saved grid too.
    model.occupancy.update(_sphere, decay=0.0, generator=torch.Generator().manual_seed(0))
    assert not model.occupancy.occupied.all()
    pose = torch.from_numpy(crops.poses[2])
    expected = render_image(model, pose, 16, 16, crops.focal / 2, 1000)

    path = tmp_path / "model.pt"
    save_checkpoint(path, model, config, extra={"step": 10})
    loaded, record = load_checkpoint(path)
    assert record["step"] == 10 and record["near"] == NEAR and record["far"] == FAR
    assert type(loaded) is type(model) and loaded.config == config.fast
    got = render_image(loaded, pose, 16, 16, crops.focal / 2, 1000)
    for a, b in zip(got[:3], expected[:3]):
        assert torch.equal(a, b)
    assert torch.equal(loaded.occupancy.occupied, model.occupancy.occupied)
    assert float(loaded.samples_per_ray) == float(model.samples_per_ray)
    # The comparison is sensitive: a fresh model of the same config renders differently.
    fresh, _ = fast_model(4)
    assert not torch.equal(render_image(fresh, pose, 16, 16, crops.focal / 2, 1000).rgb, expected.rgb)


def test_a_checkpoint_saved_again_has_the_same_bytes(tmp_path) -> None:
    """What DVC hashes: the same weights must give the same models/model.pt, or every rerun
    (a resumed run with nothing left to train included) looks like a new model."""
    model, config = fast_model(3)
    save_checkpoint(tmp_path / "model.pt", model, config, extra={"step": 10})
    loaded, record = load_checkpoint(tmp_path / "model.pt")
    save_checkpoint(tmp_path / "again.pt", loaded, config, extra={"step": record["step"]})
    assert (tmp_path / "again.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()


def test_load_checkpoint_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


# A model file's record, damaged (None: its bytes cut short).
DAMAGES = {
    "truncated": None,
    "not a checkpoint": lambda record: {"weights": torch.zeros(3)},
    "a tensor, not a record": lambda record: torch.zeros(3),
    "unknown config key": lambda record: {**record, "model_config": {**record["model_config"], "colour": 1}},
    "background as a list": lambda record: {**record, "background": [1.0, 1.0, 1.0]},
    "near past far": lambda record: {**record, "near": 6.0, "far": 2.0},
    "near not a number": lambda record: {**record, "near": float("nan")},
    "near behind the camera": lambda record: {**record, "near": -1.0},
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_load_checkpoint_names_a_damaged_file(tmp_path, damage) -> None:
    model, config = fast_model(4)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, config)
    if DAMAGES[damage] is None:
        path.write_bytes(path.read_bytes()[:1000])
    else:
        torch.save(DAMAGES[damage](torch.load(path, weights_only=True)), path)
    expected = r"model\.pt: not a model checkpoint this code can read \(\w+.*\); retrain"
    with pytest.raises(DataError, match=expected):
        load_checkpoint(path)


def test_pick_device() -> None:
    assert pick_device("cpu") == CPU
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DataError, match="^params.yaml: train.device is cuda but no CUDA device"):
            pick_device("cuda")


def test_the_machine_is_the_processor_with_the_threads_pytorch_uses_or_the_gpu() -> None:
    info = Path("/proc/cpuinfo")
    names = [line for line in info.read_text().splitlines() if line.startswith("model name")] if (
        info.is_file()) else []
    if names:  # Linux names its processors; elsewhere platform's name stands in
        assert processor() == names[0].split(":", 1)[1].strip()
    assert processor()
    for threads, said in ((1, "1 thread"), (3, "3 threads")):
        with cpu_threads(threads):
            assert machine(CPU) == f"{processor()} CPU, {said}"
    if torch.cuda.is_available():
        assert machine(torch.device("cuda")) == torch.cuda.get_device_name()


def test_fast_beats_nerf_at_equal_wall_clock_on_the_cpu() -> None:
    """params.yaml's fast and nerf configs, the same training seconds each, on central 40x40
    crops of the embedded sample: fast's held-out PSNR is clearly higher."""
    from nerf.config import load_params
    from nerf.scene import load_scene

    scene = load_scene(REPO / "assets" / "tiny_lego.npz")
    crop = scene.images[:, 30:70, 30:70]
    views = Views(crop, scene.poses, scene.focal, scene.names, np.zeros(3, np.float32))
    train_views, held_out = views.subset(range(0, 64, 4)), views.subset([66, 72, 78])
    params = load_params(REPO / "params.yaml")
    budget = 8.0
    scores = {}
    for kind in ("fast", "nerf"):
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(params.model, kind=kind), NEAR, FAR, torch.zeros(3))
        config = TrainConfig(steps=10_000, val_every=10**9, device="cpu", seed=0)
        train(model, train_views, None, config, CPU, progress=False,
              on_step=lambda step, seconds: seconds >= budget)
        scores[kind] = evaluate_views(model, held_out, None, CPU)
    assert scores["fast"] > scores["nerf"] + 2.0, scores


def test_same_params_same_result_with_any_thread_count() -> None:
    """The default fast config trains to the same bits run after run with 2 threads (the
    hash-grid scatter-add runs in parallel: the result must not depend on thread timing) and
    with 1 or 3 (where the threads split each op's work must not matter either)."""
    from nerf.scene import load_scene

    scene = load_scene(REPO / "assets" / "tiny_lego.npz")
    views = Views(scene.images[:16], scene.poses[:16], scene.focal, scene.names[:16], np.zeros(3, np.float32))
    states = []
    for threads in (2, 2, 1, 3):
        with cpu_threads(threads):
            torch.manual_seed(0)
            model = build_model(ModelConfig(kind="fast"), NEAR, FAR, torch.zeros(3))
            train(model, views, None, train_config(12), CPU, progress=False)
        states.append(model.state_dict())
    for state in states[1:]:
        assert all(torch.equal(state[name], states[0][name]) for name in states[0]), [
            name for name in states[0] if not torch.equal(state[name], states[0][name])]


def test_load_checkpoint_names_a_missing_weight_in_one_line(tmp_path) -> None:
    model, config = fast_model(4)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, config)
    record = torch.load(path, weights_only=True)
    del record["state_dict"]["field.grid.table"]
    torch.save(record, path)
    with pytest.raises(DataError) as err:
        load_checkpoint(path)
    assert str(err.value) == (f"{path}: not a model checkpoint this code can read (RuntimeError: Error(s) in "
                              "loading state_dict for FastModel:); retrain it (dvc repro train)")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
def test_pick_device_refuses_mps_where_there_is_none() -> None:
    with pytest.raises(DataError, match="^params.yaml: train.device is mps but MPS is not available"):
        pick_device("mps")


def test_cpu_training_runs_deterministic_algorithms_and_then_restores_the_setting(crops) -> None:
    model, _ = fast_model()
    seen: set[bool] = set()
    hook = lambda *_: seen.add(torch.are_deterministic_algorithms_enabled())
    model.field.density_net.register_forward_hook(hook)
    assert not torch.are_deterministic_algorithms_enabled()
    train(model, crops, None, train_config(3), CPU, progress=False)
    assert seen == {True} and not torch.are_deterministic_algorithms_enabled()


def test_the_rate_decays_from_lr_at_the_first_step_to_lr_final_at_the_last(crops, tmp_path) -> None:
    rates = _logged_rates(crops, tmp_path / "live", None)
    assert rates[0] == pytest.approx(FAST.lr) and rates[-1] == pytest.approx(FAST.lr_final)


def test_the_fast_kind_trains_with_instant_ngps_adam_settings(crops) -> None:
    saved: list[dict] = []
    model, _ = fast_model()
    train(model, crops, None, train_config(1), CPU, progress=False, on_checkpoint=saved.append)
    group = saved[-1]["optimizer"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.9, 0.99) and group["eps"] == 1e-15


def test_resuming_a_finished_state_gives_the_finished_runs_summary(crops) -> None:
    # What the train stage records in the model file when a rerun finds nothing left to train.
    config = dataclasses.replace(train_config(6), log_every=4, checkpoint_every=3)
    train_views, val_views = crops.subset([0, 1, 2]), crops.subset([3])
    saved: list[dict] = []
    model, _ = fast_model()
    full = train(model, train_views, val_views, config, CPU, progress=False, on_checkpoint=saved.append)
    model, _ = fast_model(7)
    again = train(model, train_views, val_views, config, CPU, progress=False, resume=saved[-1])
    assert again == full and full.val_psnr is not None and math.isfinite(full.loss)


def test_checkpoint_every_0_never_checkpoints(crops) -> None:
    saved: list[dict] = []
    model, _ = fast_model()
    config = dataclasses.replace(train_config(3), checkpoint_every=0)
    summary = train(model, crops, None, config, CPU, progress=False, on_checkpoint=saved.append)
    assert summary.steps == 3 and saved == []


def test_a_state_that_spent_exactly_the_budget_trains_no_further(crops) -> None:
    # As resume.load decides: the budget is spent once the seconds reach it.
    config = dataclasses.replace(train_config(steps=50), time_budget=1.0, checkpoint_every=5)
    saved: list[dict] = []
    model, _ = fast_model()
    train(model, crops, None, config, CPU, progress=False, on_checkpoint=saved.append,
          on_step=lambda step, seconds: step == 5)
    model, _ = fast_model()
    summary = train(model, crops, None, config, CPU, progress=False, resume=dict(saved[-1], seconds=1.0))
    assert summary.steps == 5 and summary.seconds == 1.0


def test_the_occupancy_grid_first_updates_after_grid_update_every_steps(crops) -> None:
    # FAST updates every 8 steps: the first 8 steps march the untouched, all-occupied grid.
    model, _ = fast_model()
    train(model, crops, None, train_config(8), CPU, progress=False)
    assert torch.all(model.occupancy.density == -1.0)
    model, _ = fast_model()
    train(model, crops, None, train_config(9), CPU, progress=False)
    assert torch.all(model.occupancy.density >= 0)


def test_the_logged_loss_is_the_final_colours_error_without_the_coarse_passes(crops) -> None:
    # The nerf kind trains on its coarse and fine errors; loss and train PSNR report the fine one.
    nerf = NerfModelConfig(pos_frequencies=2, dir_frequencies=1, width=16, depth=2, skip=1, coarse_samples=8,
                           fine_samples=8, rays_per_batch=64)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model(ModelConfig(kind="nerf", nerf=nerf), NEAR, FAR, torch.zeros(3)))
    summary = train(models[0], crops, None, dataclasses.replace(train_config(1), log_every=1), CPU,
                    progress=False)
    # The first step's batch and render again, from train.seed's stream.
    generator = torch.Generator().manual_seed(0)
    data = training_rays(crops, CPU)
    index = data.batch(64, generator)
    with torch.no_grad():
        out = models[1].render_rays(data.rays[index], randomized=True, generator=generator)
        mse, loss = colour_loss(out, models[1].background, Target(data.colors[index], data.background))
    assert summary.loss == pytest.approx(float(mse), rel=1e-5) and float(loss) > 1.5 * float(mse)


def test_a_validation_image_is_captioned_with_the_psnr_of_the_clipped_render() -> None:
    rng = np.random.default_rng(5)
    truth = rng.random((32, 32, 3)).astype(np.float32)
    rgb = truth + rng.normal(0, 0.2, truth.shape).astype(np.float32)  # partly outside [0, 1]
    clipped = np.clip(rgb, 0, 1)
    score = float(psnr(torch.from_numpy(clipped), torch.from_numpy(truth)))
    np.testing.assert_array_equal(validation_image(truth, rgb), to_uint8(comparison(truth, clipped, score)))


def test_with_a_time_budget_the_bar_keeps_the_last_logs_psnrs_beside_the_step(crops, capsys) -> None:
    # Every step sets the step beside the seconds; the train and validation PSNRs of the last
    # log stay beside it, to two decimals, and are the latest ones.
    model, _ = fast_model()
    config = dataclasses.replace(train_config(steps=100_000), time_budget=2.0, log_every=2, val_every=2)
    summary = train(model, crops, crops.subset([0]), config, CPU, progress=True)
    lines = [line for line in capsys.readouterr().err.split("\r") if "s of training" in line]
    shown = [i for i, line in enumerate(lines) if "val_psnr=" in line]
    assert shown and len(lines) - shown[0] >= 3, lines
    for line in lines[shown[0]:]:
        assert re.search(r"psnr=\d+\.\d\d, val_psnr=\d+\.\d\d, step=\d+", line), line
    assert f"psnr={summary.train_psnr:.2f}," in lines[-1], (lines[-1], summary.train_psnr)


def test_a_budget_of_ten_seconds_or_more_is_counted_in_whole_seconds(crops, capsys) -> None:
    # Tenths below 10 s ("0.8/0.8 s"); whole seconds from 10 s on.
    config = dataclasses.replace(train_config(steps=50), time_budget=10.0, checkpoint_every=5)
    saved: list[dict] = []
    train(fast_model()[0], crops, None, config, CPU, progress=False, on_checkpoint=saved.append,
          on_step=lambda step, seconds: step == 5)
    train(fast_model()[0], crops, None, config, CPU, progress=True, resume=dict(saved[-1], seconds=10.0))
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "10/10 s of training" in bar, bar
