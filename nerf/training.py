"""Training: batches of rays from the training views, MSE on colour, Adam, decaying rate.

``train`` runs the loop, logs to DVCLive (loss, train PSNR, learning rate, validation PSNR,
seconds, and an image of the first validation view at each validation) and shows a tqdm
bar; ``save_checkpoint``/``load_checkpoint`` keep the weights with the config that built them.
"""

from __future__ import annotations

import contextlib
import copy
import math
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from nerf.config import ModelConfig, TrainConfig, build, to_dict
from nerf.errors import UNREADABLE, ConfigError, DataError, TrainingError, describe
from nerf.images import comparison, downscale, to_uint8
from nerf.io import save_torch
from nerf.metrics import mse_to_psnr, psnr
from nerf.models import Model, build_model, render_image
from nerf.rays import Rays, camera_directions, rays_from_pixels
from nerf.rendering import RenderOutput, recomposite
from nerf.views import Views


def pick_device(name: str) -> torch.device:
    """``auto``: cuda where there is one, else cpu. Apple's mps only when asked for: no test
    runs there (no Mac in CI), and the CPU gives the same bits run after run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("params.yaml: train.device is cuda but no CUDA device is available; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DataError("params.yaml: train.device is mps but MPS is not available; use auto or cpu")
    return torch.device(name)


def processor() -> str:
    """The CPU's model name where Linux says it (``platform.processor()`` gives only x86_64)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    """What runs on ``device``, as a reader compares timings by: the GPU's name, or the CPU's
    with the threads PyTorch uses (``AMD EPYC CPU, 2 threads``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (mps) of {processor()}"
    threads = torch.get_num_threads()
    return f"{processor()} CPU, {threads} thread{'' if threads == 1 else 's'}"


Arithmetic = Literal["fp32", "tf32", "bf16"]


def arithmetic(precision: str, device: torch.device, model: Model) -> Arithmetic:
    """What ``train.precision`` runs on ``device``: bf16 autocast, float32 with the matmuls on
    TF32 tensor cores (CUDA only), or plain float32. auto: bf16 on CUDA for the kinds whose
    steps it makes faster (``model.bf16_on_cuda``), TF32 for the others there, float32 on
    other devices (bit-reproducible on the CPU)."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if model.bf16_on_cuda and torch.cuda.is_bf16_supported() else "tf32"
    if precision == "tf32":
        return "tf32" if device.type == "cuda" else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """CUDA float32 matmuls on TF32 tensor cores (10-bit mantissa products, float32 sums)
    for the enclosed work, then the previous setting again."""
    if not enabled:
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """On the CPU, PyTorch's deterministic kernels for the enclosed work, so that the same
    params give bit-identical results with any thread count (measured: the hash grid's
    scatter-add otherwise varies with 2 threads; the deterministic one costs ~10% speed).
    GPUs keep their fast kernels: there the same params give the same metrics up to
    floating-point summation order."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(previous or device.type == "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@contextlib.contextmanager
def paused(bar: tqdm) -> Iterator[None]:
    """Leaves the enclosed work (a validation, a checkpoint) out of ``bar``'s elapsed time
    and rate, which then are training's: a validation has its own bar."""
    started = time.time()  # tqdm's clock
    try:
        yield
    finally:
        if not bar.disable:
            pause = time.time() - started
            bar.start_t += pause
            bar.last_print_t += pause


class TrainingRays(NamedTuple):
    """Every pixel of the training views as a ray with its colour, image-major."""

    rays: Rays  # (n_views * height * width) rays
    colors: Tensor  # (n_views * height * width, 3), composited on ``background``
    pixels_per_view: int
    background: Tensor  # (3,)
    alpha: Tensor | None  # (n_views * height * width,) coverage, for RGBA sources

    def batch(self, n_rays: int | None, generator: torch.Generator) -> Tensor:
        """Indices of one training batch: ``n_rays`` pixels drawn uniformly from every view, or
        with ``n_rays`` None one whole view drawn uniformly (the seed's batches), image-major."""
        per_view, device = self.pixels_per_view, self.colors.device
        n_views = self.colors.shape[0] // per_view
        if n_rays is None:
            view = int(torch.randint(n_views, (1,), device=device, generator=generator))
            return torch.arange(view * per_view, (view + 1) * per_view, device=device)
        return torch.randint(n_views * per_view, (n_rays,), device=device, generator=generator)


def training_rays(views: Views, device: torch.device) -> TrainingRays:
    directions = camera_directions(views.height, views.width, views.focal, device)
    poses = torch.from_numpy(views.poses).to(device)
    rays = rays_from_pixels(poses[:, None, None], directions[None])
    colors = torch.from_numpy(views.images).to(device).reshape(-1, 3)
    background = torch.from_numpy(views.background).to(device)
    alpha = None if views.alpha is None else torch.from_numpy(views.alpha).to(device).reshape(-1)
    return TrainingRays(rays, colors, views.height * views.width, background, alpha)


class Target(NamedTuple):
    """The colours a batch of rays must render, and on what background."""

    rgb: Tensor  # (n_rays, 3) composited on ``background``
    background: Tensor  # (3,)
    alpha: Tensor | None = None  # (n_rays,) coverage; with ``new``, the loss is on ``new``
    new: Tensor | None = None  # (n_rays, 3) each ray's random background colour


def colour_loss(out: RenderOutput, rendered_on: Tensor, target: Target) -> tuple[Tensor, Tensor]:
    """(MSE of the final colours, training loss: that plus the coarse pass's MSE if any).

    ``out`` was rendered on ``rendered_on`` (3,). With ``target.new``, every pass and the
    target move onto each ray's own background first: a scene that explains the background
    with density (floaters) cannot match a colour it does not know.
    """
    goal = target.rgb
    if target.new is not None:
        goal = recomposite(goal, target.alpha, target.background, target.new)
    errors = []
    for rgb, opacity in ((out.rgb, out.opacity), (out.coarse_rgb, out.coarse_opacity)):
        if rgb is None:
            continue
        rgb = rgb.float()
        if target.new is not None:
            rgb = recomposite(rgb, opacity.float(), rendered_on, target.new)
        errors.append(F.mse_loss(rgb, goal))
    return errors[0], sum(errors[1:], errors[0])


class TrainSummary(NamedTuple):
    steps: int
    seconds: float  # training time, validation excluded
    loss: float
    train_psnr: float
    val_psnr: float | None


def schedule_progress(step: int, steps: int, seconds: float = 0.0, budget: float | None = None) -> float:
    """How far along the schedule training is, 0 to 1: ``step`` of ``steps`` (0-based, the last
    is ``steps``), or with a time ``budget``, ``seconds`` of it, whichever is further."""
    progress = step / max(steps, 1)
    if budget is not None:
        progress = max(progress, seconds / budget)
    return min(progress, 1.0)


def learning_rate(progress: float, lr: float, lr_final: float) -> float:
    """Exponential decay from ``lr`` at progress 0 to ``lr_final`` at 1."""
    return lr * (lr_final / lr) ** progress


def evaluate_views(
    model: Model, views: Views, chunk: int | None, device: torch.device,
    on_render: Callable[[int, Tensor], None] | None = None, progress: bool = False,
) -> float:
    """Mean PSNR (dB) of the model's renders of ``views``. ``on_render(i, rgb)``, if given,
    sees view i's render, (height, width, 3) in [0, 1]. ``progress``: a bar over the views
    that goes when done (a 100x100 nerf view takes ~33 s on a 2-core CPU)."""
    model.eval()
    scores = []
    with tqdm(range(views.n_views), desc="validate", unit="view", leave=False, disable=not progress,
              dynamic_ncols=True) as bar:
        for i in bar:
            pose = torch.from_numpy(views.poses[i]).to(device)
            rgb = render_image(model, pose, views.height, views.width, views.focal, chunk).rgb.clamp(0, 1)
            # On the CPU: PSNR sums in float64, which MPS lacks.
            scores.append(float(psnr(rgb.cpu(), torch.from_numpy(views.images[i]))))
            if on_render is not None:
                on_render(i, rgb)
    model.train()
    # Exactly rounded: Python 3.12's sum() compensates and 3.11's does not, which moved the
    # last digit of the default run's validation PSNR (and so the model file's bytes).
    return math.fsum(scores) / len(scores)


# Validation images wider than this are area-averaged by a whole factor to at most this width
# per panel: they go into git with the other DVCLive files (an 800x800 view becomes 200x200;
# a 100x100 one is enlarged to 200x200, each pixel a 2x2 block).
PREVIEW_WIDTH = 256


def validation_image(truth: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """truth | render | error (:func:`nerf.images.comparison`, captioned with the render's
    PSNR) of one view, (h, w, 3) each, each panel at most ``PREVIEW_WIDTH`` wide; uint8."""
    rgb = np.clip(rgb, 0.0, 1.0)
    score = float(psnr(torch.from_numpy(rgb), torch.from_numpy(np.asarray(truth))))
    factor = math.ceil(truth.shape[1] / PREVIEW_WIDTH)
    return to_uint8(comparison(downscale(truth, factor), downscale(rgb, factor), score, fit=PREVIEW_WIDTH))


def train(
    model: Model,
    train_views: Views,
    val_views: Views | None,
    config: TrainConfig,
    device: torch.device,
    live: Any | None = None,
    chunk: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], bool] | None = None,
    resume: dict | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
) -> TrainSummary:
    """Fits ``model`` (already on ``device``) to ``train_views``.

    Every ``config.log_every`` steps the mean loss and train PSNR since the last log go to
    ``live`` (a ``dvclive.Live``); every ``config.val_every`` steps and at the end, the PSNR
    on ``val_views``. The random stream is ``config.seed``'s. ``on_step(step, seconds)``, if
    given, runs after every step (its time is not counted) and stops training by returning True.

    Every ``config.checkpoint_every`` steps and after the last, ``on_checkpoint`` receives
    the loop's whole state (see ``_Loop.state``); handing such a state back as ``resume``
    continues from it exactly where it stopped: on the CPU the result is bit-identical to an
    uninterrupted run.
    """
    with deterministic(device):
        return _Loop(model, train_views, val_views, config, device, live, chunk, resume).run(
            progress, on_step, on_checkpoint
        )


class _Loop:
    """The training loop and everything it carries from one step to the next."""

    def __init__(
        self,
        model: Model,
        train_views: Views,
        val_views: Views | None,
        config: TrainConfig,
        device: torch.device,
        live: Any | None,
        chunk: int | None,
        resume: dict | None,
    ) -> None:
        self.model, self.val_views, self.config = model, val_views, config
        self.device, self.live, self.chunk = device, live, chunk
        self.data = training_rays(train_views, device)
        self.lr0, self.lr_final = model.config.lr, model.config.lr_final
        if config.lr is not None:
            self.lr0, self.lr_final = config.lr, self.lr_final * config.lr / self.lr0
        # One fused kernel for all parameters on CUDA; the CPU keeps its reference arithmetic.
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr0, **model.adam_options, **fused)
        self.arithmetic = arithmetic(config.precision, device, model)
        if config.compile:
            for field in model.fields():
                field.compile(dynamic=True)  # in place: the state dict keeps its keys
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.step = 0  # steps done
        self.seconds = 0.0  # training time so far, validation and checkpoints excluded
        self.loss_sum = torch.zeros((), device=device)  # colour MSE summed since the last log
        self.loss_count = 0
        self.last_loss = float("nan")
        self.val_psnr: float | None = None
        self.shown: dict[str, str] = {}  # the bar's PSNRs, as of the last log
        if resume is not None:
            self.load_state(resume)

    def state(self) -> dict:
        """Everything needed to continue: weights and buffers (occupancy grid, batch sizing),
        optimizer moments, random stream, step, time and the running loss."""
        return {
            "step": self.step,
            "seconds": self.seconds,
            "loss_sum": self.loss_sum.detach().cpu().clone(),
            "loss_count": self.loss_count,
            "last_loss": self.last_loss,
            "val_psnr": self.val_psnr,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
        }

    def load_state(self, state: dict) -> None:
        """Continues from ``state`` (as :meth:`state` made it), which stays as it was: the
        optimizer would otherwise keep its moment tensors and update them in place."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.generator.set_state(state["generator"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.loss_sum = state["loss_sum"].to(self.device, copy=True)
        self.loss_count, self.last_loss = int(state["loss_count"]), float(state["last_loss"])
        self.val_psnr = state["val_psnr"]

    def run(
        self,
        progress: bool,
        on_step: Callable[[int, float], bool] | None,
        on_checkpoint: Callable[[dict], None] | None,
    ) -> TrainSummary:
        config = self.config
        self.model.train()
        with self.progress_bar(progress) as bar:
            for step in range(self.step + 1, config.steps + 1):
                if self.time_is_up():  # resumed from a state that had spent the budget
                    break
                started = time.perf_counter()
                with tf32_matmuls(self.arithmetic == "tf32"):  # the step and any grid update
                    self.train_step(step)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                spent = time.perf_counter() - started
                self.seconds += spent
                self.step = step
                if config.time_budget is not None:  # the bar counts seconds: the step beside them
                    bar.set_postfix(self.shown | {"step": step}, refresh=False)
                # Counted here: the loop may stop at this step, with the bar at 100%.
                bar.update(1 if config.time_budget is None else min(spent, bar.total - bar.n))
                last = step == config.steps or self.time_is_up()

                logged = step % config.log_every == 0 or last
                if logged:
                    self.log(step, bar)
                if last:
                    bar.close()  # its time and rate: training's, not the final validation's
                with paused(bar):
                    if self.val_views is not None and self.val_views.n_views > 0 and (
                        step % config.val_every == 0 or last
                    ):
                        on_render = None if self.live is None else self.log_validation_image(step)
                        self.val_psnr = evaluate_views(self.model, self.val_views, self.chunk,
                                                       self.device, on_render, progress)
                        if self.live is not None:
                            self.live.step = step
                            self.live.log_metric("val/psnr", self.val_psnr)
                            self.live.log_metric("val/seconds", self.seconds)
                    if self.live is not None and logged:
                        self.live.next_step()
                    if on_checkpoint is not None and config.checkpoint_every > 0 and (
                        step % config.checkpoint_every == 0 or last
                    ):
                        on_checkpoint(self.state())
                if (on_step is not None and on_step(step, self.seconds)) or last:
                    break
        train_psnr = float(mse_to_psnr(torch.tensor(self.last_loss)))
        return TrainSummary(self.step, self.seconds, self.last_loss, train_psnr, self.val_psnr)

    def progress_bar(self, show: bool) -> tqdm:
        """Steps done of ``train.steps``; with a time budget, seconds of training spent of it
        (the step in the postfix), which is what decides when training ends."""
        name = f"train {type(self.model).__name__}"
        if self.config.time_budget is None:
            return tqdm(initial=self.step, total=self.config.steps, desc=name, unit="step", disable=not show,
                        dynamic_ncols=True)
        budget = self.config.time_budget
        seconds = "{n:.0f}/{total:.0f}" if budget >= 10 else "{n:.1f}/{total:.1f}"  # not "0/0" for 0.4
        return tqdm(initial=min(self.seconds, budget), total=budget, desc=name, disable=not show,
                    dynamic_ncols=True, bar_format="{l_bar}{bar}| " + seconds + " s of training "
                                                   "[{elapsed}<{remaining}{postfix}]")

    def time_is_up(self) -> bool:
        """Whether training has spent its time budget (``train.time_budget``)."""
        return self.config.time_budget is not None and self.seconds >= self.config.time_budget

    def train_step(self, step: int) -> None:
        """One optimizer step; ``step`` counts from 1."""
        model, data, generator = self.model, self.data, self.generator
        for group in self.optimizer.param_groups:
            progress = schedule_progress(step - 1, self.config.steps - 1, self.seconds,
                                         self.config.time_budget)
            group["lr"] = learning_rate(progress, self.lr0, self.lr_final)
        model.before_step(step - 1, generator)
        index = data.batch(model.rays_per_batch(), generator)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.arithmetic == "bf16"):
            out = model.render_rays(data.rays[index], randomized=True, generator=generator)
        alpha = new = None
        if self.config.random_background and data.alpha is not None:
            alpha = data.alpha[index]
            new = torch.rand(len(index), 3, device=self.device, generator=generator)
        target = Target(data.colors[index], data.background, alpha, new)
        mse, loss = colour_loss(out, model.background, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += mse.detach()
        self.loss_count += 1

    def log_validation_image(self, step: int) -> Callable[[int, Tensor], None]:
        """For :func:`evaluate_views`: logs the first validation view at ``step`` as
        ``images/val/<step>.png`` (DVCLive's pattern for a sequence of images)."""

        def log(index: int, rgb: Tensor) -> None:
            if index == 0:
                image = validation_image(self.val_views.images[0], rgb.float().cpu().numpy())
                self.live.log_image(f"val/{step}.png", image)

        return log

    def log(self, step: int, bar: tqdm) -> None:
        """Mean loss and train PSNR since the last log, to the bar (with the last validation
        PSNR) and DVCLive."""
        self.last_loss = float(self.loss_sum) / self.loss_count
        self.loss_sum.zero_()
        self.loss_count = 0
        if not math.isfinite(self.last_loss):
            raise TrainingError(f"training diverged at step {step} (loss {self.last_loss}); lower train.lr")
        train_psnr = float(mse_to_psnr(torch.tensor(self.last_loss)))
        self.shown = {"psnr": f"{train_psnr:.2f}"}  # the training batches'; the last validation's
        self.shown |= {} if self.val_psnr is None else {"val_psnr": f"{self.val_psnr:.2f}"}
        bar.set_postfix(self.shown | ({} if self.config.time_budget is None else {"step": step}))
        if self.live is not None:
            self.live.step = step
            self.live.log_metric("train/loss", self.last_loss)
            self.live.log_metric("train/psnr", train_psnr)
            # The last step's rate.
            self.live.log_metric("train/learning_rate", self.optimizer.param_groups[0]["lr"])
            self.live.log_metric("train/seconds", self.seconds)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | Path, model: Model, model_config: ModelConfig, extra: dict | None = None
) -> None:
    """Weights plus everything needed to rebuild the model, written atomically."""
    state = {
        "model_config": to_dict(model_config),
        "near": model.near,
        "far": model.far,
        "background": model.background.cpu(),
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    save_torch(path, state)


def _check_record(state: Any) -> None:
    """The parts of a model file that :func:`build_model` takes as they are: a TypeError or
    ValueError (which :func:`load_checkpoint` reports) where they are not what
    :func:`save_checkpoint` writes."""
    if not isinstance(state, dict):
        raise TypeError(f"expected a dict of the model's record, got {type(state).__name__}")
    near, far, background = state["near"], state["far"], state["background"]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (near, far)) or not 0 <= near < far:
        raise ValueError(f"near {near!r} and far {far!r}: expected finite numbers, 0 <= near < far")
    if not (isinstance(background, Tensor) and background.shape == (3,) and background.is_floating_point()):
        raise ValueError(f"background: expected 3 colour values, got {background!r}")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[Model, dict]:
    """Rebuilds the model saved by :func:`save_checkpoint`; returns it and the whole record."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found; run the train stage first (dvc repro train)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        _check_record(state)
        config = build(ModelConfig, state["model_config"], "model")
        model = build_model(config, state["near"], state["far"], state["background"])
        model.load_state_dict(state["state_dict"])
    except (ConfigError, *UNREADABLE) as err:
        raise DataError(f"{path}: not a model checkpoint this code can read ({describe(err, path)}); "
                        "retrain it (dvc repro train)") from None
    return model.to(device), state

