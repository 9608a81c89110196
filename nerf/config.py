"""Typed, strict configuration built from ``params.yaml``.

One frozen dataclass per ``params.yaml`` section. :func:`load_params` reads the file
and builds them; an unknown key, a missing key, a value of the wrong type or out of
range fails at once with a :class:`ConfigError` whose message names the full key
(``train.steps``) and what is allowed.

Range limits and allowed values live on the fields (``field(metadata=...)``) and are
checked by :func:`build`, which :func:`load_params` uses; cross-field rules live in
``__post_init__``, so they hold for configs built in code, too. The fields' defaults are
the committed ``params.yaml``'s values (a test keeps them so), so ``Params()`` is what the
pipeline runs by default.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML, YAMLError

from nerf.errors import ConfigError, run_stage


def _range(
    default: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with numeric bounds that the builder checks."""
    bounds = {k: v for k, v in {"gt": gt, "ge": ge, "lt": lt, "le": le}.items() if v is not None}
    return field(default=default, metadata={"bounds": bounds})


_BOUND_TEXT = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_BOUND_TEST = {
    "gt": lambda v, b: v > b,
    "ge": lambda v, b: v >= b,
    "lt": lambda v, b: v < b,
    "le": lambda v, b: v <= b,
}


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataConfig:
    """Where the scene comes from and its depth bounds."""

    # "sample" (embedded tiny lego), an http(s) URL, or a local file or folder path.
    source: str = "sample"
    # Expected SHA-256 of a downloaded file (hex); required for URLs, optional otherwise.
    sha256: str | None = None
    # "auto" detects from the source: a .npz file or a Blender folder.
    format: Literal["auto", "npz", "blender"] = "auto"
    # Depth range along each ray that encloses the scene.
    near: float = _range(2.0, ge=0.0)
    far: float = _range(6.0, gt=0.0)

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError(f"data.source is {self.source!r}; expected sample, an http(s) URL "
                              "or the path of a .npz file or Blender folder")
        if not self.near < self.far:
            raise ConfigError(
                f"data.near must be less than data.far, got near={self.near} far={self.far}"
            )
        if self.sha256 is not None:
            digest = self.sha256.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(
                    f"data.sha256 must be 64 hexadecimal characters, got {self.sha256!r}"
                )


@dataclass(frozen=True)
class SplitConfig:
    """How source views are divided into train, validation and test sets, and resized."""

    strategy: Literal["tail", "every_nth", "random", "official"] = "tail"
    # Fraction of views held out for testing (tail, random).
    test_fraction: float = _range(0.2, gt=0.0, lt=1.0)
    # every_nth holds out views 0, n, 2n, ...
    every_nth: int = _range(8, ge=2)
    # Output width in pixels (height by aspect ratio, area-averaged); null keeps the size.
    image_size: int | None = _range(None, ge=1)
    # Colour RGBA sources are composited on.
    background: Literal["black", "white"] = "black"
    seed: int = _range(0, ge=0, le=2**32 - 1)
    # Views set aside for validation: training's held-out PSNR curve, and the score to pick
    # hyperparameters by, so that the test views stay unseen until evaluation. Taken evenly
    # spaced from the training views, or for split.strategy official from the source's own
    # validation views (transforms_val.json) where it has them. 0: no validation.
    val_views: int = _range(4, ge=0)


def fits_mlp_kernel(width: int) -> bool:
    """Whether nerf.mlp_kernel takes an MLP this wide: a power of two, at least 16."""
    return width >= 16 and width & (width - 1) == 0


# The most Fourier frequencies an encoding may have: the highest, 2^29 (x pi in the seed),
# already turns a float32 coordinate's rounding into a random phase.
MAX_FREQUENCIES = 30


def _check_skip(kind: str, skip: int, depth: int) -> None:
    """A skip layer the MLP has: below its depth (a larger index would be silently unused)."""
    if skip >= depth:
        raise ConfigError(f"model.{kind}.skip must be < model.{kind}.depth ({depth}): the index of a "
                          f"hidden layer, or 0 for no skip connection; got {skip}")


@dataclass(frozen=True)
class SeedModelConfig:
    """The notebook's model: one MLP on the Fourier-encoded (position, direction) 6-vector.

    Trained on one whole random training image per step, stratified samples on [near, far].
    """

    # At most MAX_FREQUENCIES: past that sin(2^L x) is noise in float32 (and 2^128 is inf).
    frequencies: int = _range(10, ge=0, le=MAX_FREQUENCIES)
    width: int = _range(256, ge=1)
    depth: int = _range(8, ge=1)
    # Index of the hidden layer whose input is concatenated with the encoded input again
    # (below depth; 0: none, layer 0 takes the encoded input alone).
    skip: int = _range(5, ge=0)
    samples: int = _range(80, ge=1)
    lr: float = _range(5e-4, gt=0.0)
    lr_final: float = _range(5e-4, gt=0.0)
    # The MLP's code on CUDA (nerf.mlp_kernel): torch (plain PyTorch), triton (two fused
    # kernels, in bf16 wherever they run; needs the triton package and a width that is a power
    # of two, at least 16) or auto (triton under bf16 autocast, as train.precision auto trains
    # on CUDA, where the package is installed and the width fits; else PyTorch). The default
    # stays torch until the kernels are measured on a GPU: they were written without one.
    mlp_kernel: Literal["auto", "torch", "triton"] = "torch"

    def __post_init__(self) -> None:
        _check_skip("seed", self.skip, self.depth)
        if self.mlp_kernel == "triton" and not fits_mlp_kernel(self.width):
            raise ConfigError(f"model.seed.mlp_kernel is triton, which needs model.seed.width a power of two "
                              f"and at least 16, got {self.width}: set it to auto or torch")


@dataclass(frozen=True)
class NerfModelConfig:
    """The NeRF paper's model: coarse and fine MLPs, view-direction branch."""

    pos_frequencies: int = _range(10, ge=0, le=MAX_FREQUENCIES)
    dir_frequencies: int = _range(4, ge=0, le=MAX_FREQUENCIES)
    width: int = _range(256, ge=1)
    depth: int = _range(8, ge=1)
    # As the seed's: the index of the layer whose input is [hidden, encoded position]; 5 is the
    # paper's (its code's skips=[4] concatenates after layer 4, so layer 5 takes the input).
    skip: int = _range(5, ge=0)
    coarse_samples: int = _range(64, ge=1)
    fine_samples: int = _range(128, ge=0)
    rays_per_batch: int = _range(1024, ge=1)
    lr: float = _range(5e-4, gt=0.0)
    lr_final: float = _range(5e-5, gt=0.0)

    def __post_init__(self) -> None:
        _check_skip("nerf", self.skip, self.depth)


@dataclass(frozen=True)
class FastModelConfig:
    """Instant-NGP family: hash-grid field, occupancy grid, SH view encoding."""

    levels: int = _range(8, ge=1)
    features_per_level: int = _range(2, ge=1)
    log2_table_size: int = _range(17, ge=4, le=26)
    # Cells per side of the coarsest and finest levels; at most 2^24, where cell coordinates
    # stop being exact in float32 (and int32 indices would overflow).
    base_resolution: int = _range(16, ge=2, le=2**24)
    max_resolution: int = _range(256, ge=2, le=2**24)
    hidden: int = _range(64, ge=1)
    geo_features: int = _range(15, ge=1)
    sh_degree: int = _range(4, ge=1, le=4)
    # Half the side of the axis-aligned cube around the origin that holds the scene.
    bound: float = _range(1.5, gt=0.0)
    # Occupancy grid cells per side, update period and opacity threshold.
    grid_resolution: int = _range(64, ge=1)
    grid_update_every: int = _range(16, ge=1)
    grid_threshold: float = _range(0.01, gt=0.0, lt=1.0)
    # March step: this many steps across the cube's diagonal.
    steps_per_diagonal: int = _range(256, ge=1)
    # Ray batches are sized so that a step evaluates about this many samples.
    samples_per_batch: int = _range(65536, ge=1)
    max_rays_per_batch: int = _range(8192, ge=1)
    lr: float = _range(1e-2, gt=0.0)
    lr_final: float = _range(5e-4, gt=0.0)
    # The hash grid's code on CUDA: torch (plain PyTorch), triton (fused kernels; needs the
    # triton package) or auto (triton where it is installed). Other devices always run the
    # PyTorch code.
    hash_kernel: Literal["auto", "torch", "triton"] = "auto"
    # The same choice for the occupancy-grid march (nerf.march_kernel) and for the volume
    # rendering of the packed samples (nerf.render_kernel).
    march_kernel: Literal["auto", "torch", "triton"] = "auto"
    render_kernel: Literal["auto", "torch", "triton"] = "auto"

    def __post_init__(self) -> None:
        if self.max_resolution < self.base_resolution:
            raise ConfigError(
                "model.fast.max_resolution must be >= model.fast.base_resolution, "
                f"got {self.max_resolution} < {self.base_resolution}"
            )
        # The hash grid's kernels address table values with 32-bit integers; every level's
        # table holds at most 2^log2_table_size rows.
        values = self.levels * self.features_per_level * 2**self.log2_table_size
        if values >= 2**31:
            raise ConfigError(
                "model.fast: levels x features_per_level x 2^log2_table_size must be below 2^31 (an "
                f"8-GiB table), got {self.levels} x {self.features_per_level} x 2^{self.log2_table_size}"
            )


@dataclass(frozen=True)
class ModelConfig:
    kind: Literal["seed", "nerf", "fast"] = "fast"
    seed: SeedModelConfig = field(default_factory=SeedModelConfig)
    nerf: NerfModelConfig = field(default_factory=NerfModelConfig)
    fast: FastModelConfig = field(default_factory=FastModelConfig)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _range(800, ge=1)
    # A training-time budget in seconds (validation and checkpoints excluded): training stops
    # once it is spent, and the learning rate decays over whichever of steps and time is
    # further along. null: steps alone (a time budget makes results depend on the machine).
    time_budget: float | None = _range(None, gt=0.0)
    # null: the model kind's own model.<kind>.lr; a number overrides it (and lr_final scales).
    lr: float | None = _range(None, gt=0.0)
    # Loss and train PSNR (means over the steps since the last log) every this many steps.
    log_every: int = _range(10, ge=1)
    # Validation PSNR (over all split.val_views views) every this many steps and at the end.
    val_every: int = _range(250, ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    seed: int = _range(0, ge=0, le=2**32 - 1)
    # Resumable state (model, optimizer, random stream, logs) saved every this many steps
    # and at the end; a killed run resumes from it. 0: never.
    checkpoint_every: int = _range(100, ge=0)
    # Arithmetic of the training steps' networks. auto: on CUDA, bf16 autocast for the kinds it
    # measured faster for (seed, nerf) and tf32 for fast; float32 on other devices (bit-
    # reproducible on the CPU). tf32: float32 with CUDA matmuls on TF32 tensor cores (plain
    # float32 elsewhere); fp32 | tf32 | bf16 force it.
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"
    # torch.compile the fields' forward passes (dynamic shapes) for training. Off by default:
    # on an H100 it costs ~15 s before the first step and gains 10-25% per step.
    compile: bool = False
    # RGBA sources (Blender folders): each training ray is composited on its own random
    # background colour, in the render and in the target, as instant-NGP trains; evaluation
    # keeps split.background. Without alpha (the embedded sample) it changes nothing.
    random_background: bool = True


@dataclass(frozen=True)
class RenderConfig:
    # Rays per forward pass when rendering whole images; None: nerf.models.default_chunk
    # for the device (1024 on the CPU, 8192 on a GPU).
    chunk: int | None = _range(None, ge=1)


@dataclass(frozen=True)
class VideoConfig:
    """The orbit video: a camera path around the scene's centre (the point the test cameras
    look at), rendered with the test views' camera."""

    # orbit: a circle at a fixed elevation; spiral: the elevation swings by +-amplitude.
    path: Literal["orbit", "spiral"] = "orbit"
    frames: int = _range(48, ge=1, le=10_000)  # every frame is held in memory until written
    fps: float = _range(24.0, ge=0.1, le=240.0)  # a GIF frame lasts at most 655 s
    # Distance from the centre; null: the test cameras' mean distance.
    radius: float | None = _range(None, gt=0.0)
    # Degrees above the horizontal plane (world z up).
    elevation: float = _range(30.0, ge=-89.0, le=89.0)
    amplitude: float = _range(15.0, ge=0.0, le=89.0)
    turns: float = _range(1.0, gt=0.0)
    # Frame width in pixels (height by the test views' aspect); null: the test views' width.
    # 4096 at most: every ray of a frame is made at once, and colour | depth doubles the width.
    width: int | None = _range(None, ge=8, le=4096)

    def __post_init__(self) -> None:
        if self.path == "spiral" and abs(self.elevation) + self.amplitude > 89.0:
            raise ConfigError(
                f"video.elevation={self.elevation} +- video.amplitude={self.amplitude} "
                "leaves (-89, 89) degrees"
            )


def gaussian_window_size(sigma: float) -> int:
    """The side of the Gaussian window torchmetrics uses for ``sigma``: ``2*int(3.5*sigma+0.5)+1``.

    With ``gaussian_kernel=True`` torchmetrics derives the window from ``sigma`` and ignores
    ``kernel_size``; :func:`nerf.metrics.ssim` therefore requires the two to agree (11 for sigma 1.5).
    Here, not in :mod:`nerf.metrics`, so that checking params needs no torch.
    """
    return 2 * int(3.5 * sigma + 0.5) + 1


@dataclass(frozen=True)
class EvalConfig:
    ssim_kernel: int = _range(11, ge=3)
    ssim_sigma: float = _range(1.5, gt=0.0, le=100.0)  # 100: a 701-pixel window

    def __post_init__(self) -> None:
        window = gaussian_window_size(self.ssim_sigma)
        if self.ssim_kernel != window:
            raise ConfigError(
                f"eval.ssim_kernel={self.ssim_kernel} does not match eval.ssim_sigma={self.ssim_sigma}: "
                f"the Gaussian SSIM window for that sigma is {window} pixels"
            )

    @property
    def min_image_side(self) -> int:
        """The fewest pixels on each side of an image that the SSIM window fits (its
        reflection padding needs more pixels than half the window)."""
        return self.ssim_kernel // 2 + 1


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- building

_T = typing.TypeVar("_T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


class _BadValue(ConfigError):
    """A value of the right type that is still not allowed (an infinite number)."""


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except _BadValue:
                raise  # the right type: say what is wrong with the value
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise _BadValue(f"{key} must be a finite number, got an integer beyond any float") from None
        if not math.isfinite(number):
            raise _BadValue(f"{key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def build(cls: type[_T], values: dict[str, Any], prefix: str = "") -> _T:
    """Builds dataclass ``cls`` from ``values``; every field must be given, no other key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    what = "key" if prefix else "section"  # the top level's keys are the sections
    for name in values:
        if not isinstance(name, str):  # `1: a` or `[a, b]: c` in the YAML
            raise ConfigError(f"{what} {name!r}" + (f" in {prefix}" if prefix else "")
                              + f" is not a name; expected {what}s: {', '.join(names)}")
    unknown = sorted(set(values) - set(names))
    if unknown:
        keys = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(f"unknown {what} {keys}" + (f" in {prefix}" if prefix else "")
                          + f"; expected {what}s: {', '.join(names)}")
    missing = [n for n in names if n not in values]
    if missing:
        keys = ", ".join(f"{prefix}.{k}" if prefix else k for k in missing)
        raise ConfigError(f"missing {what} {keys}" + (f" in {prefix}" if prefix else ""))
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = _convert(values[f.name], hints[f.name], key)
        for bound, limit in f.metadata.get("bounds", {}).items():
            if value is not None and not _BOUND_TEST[bound](value, limit):
                raise ConfigError(f"{key} must be {_BOUND_TEXT[bound]} {limit}, got {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


def parse_yaml(text: str) -> Any:
    """YAML 1.2, as DVC reads and writes ``params.yaml`` (ruamel.yaml): ``dvc exp run -S
    train.lr=1e-5`` writes ``1e-05``, a number in YAML 1.2 and a string in YAML 1.1 (PyYAML),
    where ``yes`` and ``off`` would also be booleans. Duplicate keys are an error."""
    return YAML(typ="safe", pure=True).load(text)


def _yaml_problem(err: YAMLError) -> str:
    """' at line 3, column 3: found duplicate key ...' from the parser's error, on one line."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if not problem:
        return f" ({' '.join(str(err).split())})"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    return f"{where}: {problem}" + (f" ({context})" if context else "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads and validates the whole ``params.yaml``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; expected the pipeline's params.yaml") from None
    except OSError as err:  # a folder, no permission
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err}); expected the pipeline's "
                          "params.yaml") from None
    except UnicodeDecodeError as err:
        line = err.object[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} on line {line}); "
                          "YAML files are UTF-8") from None
    try:
        values = parse_yaml(text)
    except YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML{_yaml_problem(err)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    try:
        return build(Params, values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config (for checkpoints and logs)."""
    return dataclasses.asdict(config)


def main() -> None:
    """Checks the whole params file now. A stage checks it when it runs, but DVC runs none
    for a key that no stage reads (a misspelt ``data.sha265``, a new ``trian`` section)."""
    parser = argparse.ArgumentParser(prog="python -m nerf.config",
                                     description="Checks a params file: every key known, each value allowed.")
    parser.add_argument("params", nargs="?", default="params.yaml", type=Path, help="default: params.yaml")
    args = parser.parse_args()
    load_params(args.params)
    print(f"{args.params}: every section and key known, every value allowed")


if __name__ == "__main__":
    run_stage(main)
