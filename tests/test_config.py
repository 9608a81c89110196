"""params.yaml validation: every bad key or value fails at once, naming the key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from nerf.config import (
    DataConfig,
    FastModelConfig,
    NerfModelConfig,
    Params,
    SeedModelConfig,
    SplitConfig,
    load_params,
    to_dict,
)
from nerf.errors import ConfigError


def write(tmp_path, edit) -> str:
    params = to_dict(Params())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


def test_repository_params_load_with_fast_as_the_default_kind():
    # load_params rejects a committed file that misses or adds any key.
    assert load_params(REPO / "params.yaml").model.kind == "fast"


def test_code_defaults_are_the_committed_params(tmp_path):
    # A config built in code (Params(), FastModelConfig()) gets what the pipeline runs by
    # default. The committed file, not the workspace's: `dvc exp run -S` leaves its values there.
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True,
                           text=True, check=False)
    committed = tmp_path / "params.yaml"
    committed.write_text(shown.stdout if shown.returncode == 0 else (REPO / "params.yaml").read_text())
    assert load_params(committed) == Params()


def test_round_trip_of_defaults(tmp_path):
    assert load_params(write(tmp_path, lambda p: None)) == Params()


@pytest.mark.parametrize(
    ("edit", "key", "expected"),
    [
        (lambda p: p["train"].update(lrr=1.0), "train.lrr", "unknown key"),
        (lambda p: p.update(extra={}), "extra", "unknown section extra; expected sections: data, split,"),
        (lambda p: p.pop("video"), "video", "missing section video"),
        (lambda p: p["model"]["fast"].update(levels_x=3), "model.fast.levels_x", "unknown key"),
        (lambda p: p["train"].pop("steps"), "train.steps", "missing key"),
        (lambda p: p["train"].update(steps=-5), "train.steps", ">= 1"),
        (lambda p: p["train"].update(steps="many"), "train.steps", "an integer"),
        (lambda p: p["train"].update(steps=2.5), "train.steps", "an integer"),
        (lambda p: p["model"]["seed"].update(samples=0), "model.seed.samples", ">= 1"),
        (lambda p: p["model"]["nerf"].update(coarse_samples=0), "model.nerf.coarse_samples", ">= 1"),
        (lambda p: p["split"].update(test_fraction=1.0), "split.test_fraction", "< 1"),
        (lambda p: p["split"].update(test_fraction=0), "split.test_fraction", "> 0"),
        (lambda p: p["split"].update(strategy="alternate"), "split.strategy", "one of"),
        (lambda p: p["data"].update(near=6.0, far=2.0), "data.near", "less than data.far"),
        (lambda p: p["data"].update(near=2.0, far=2.0), "data.near", "less than data.far"),
        (lambda p: p["data"].update(sha256="abc"), "data.sha256", "64 hexadecimal"),
        (lambda p: p["train"].update(lr=0), "train.lr", "> 0"),
        (lambda p: p["train"].update(device="tpu"), "train.device", "one of"),
        (lambda p: p["train"].update(precision="fp16"), "train.precision",
         "one of 'auto', 'fp32', 'tf32', 'bf16'"),
        (lambda p: p["train"].update(compile="yes"), "train.compile", "true or false"),
        (lambda p: p["model"].update(kind="mlp"), "model.kind", "one of"),
        (lambda p: p["model"].update(fast=3), "model.fast", "a mapping"),
        (lambda p: p["model"]["fast"].update(levels=16, log2_table_size=26), "model.fast",
         "below 2^31 (an 8-GiB table), got 16 x 2 x 2^26"),
        (lambda p: p["model"]["fast"].update(max_resolution=2**31), "model.fast.max_resolution",
         "<= 16777216"),
        (lambda p: p["model"]["fast"].update(base_resolution=2**25, max_resolution=2**25),
         "model.fast.base_resolution", "<= 16777216"),
        (lambda p: p["model"]["nerf"].update(pos_frequencies=128), "model.nerf.pos_frequencies", "<= 30"),
        (lambda p: p["model"]["nerf"].update(dir_frequencies=31), "model.nerf.dir_frequencies", "<= 30"),
        (lambda p: p["model"]["seed"].update(frequencies=40), "model.seed.frequencies", "<= 30"),
        (lambda p: p["model"]["fast"].update(hash_kernel="cuda"), "model.fast.hash_kernel",
         "one of 'auto', 'torch', 'triton'"),
        (lambda p: p["eval"].update(ssim_sigma=float("nan")), "eval.ssim_sigma", "finite"),
        (lambda p: p["eval"].update(ssim_kernel=7), "eval.ssim_kernel", "window for that sigma is 11"),
        (lambda p: p["eval"].update(ssim_sigma=True), "eval.ssim_sigma", "must be a number, got True"),
        (lambda p: p["eval"].update(ssim_sigma=1e308), "eval.ssim_sigma", "must be <= 100.0, got 1e+308"),
        (lambda p: p["train"].update({1: "a", "foo": "b"}), "train",
         "key 1 in train is not a name; expected keys: steps,"),
        (lambda p: p.update({2: "b"}), "section 2", "is not a name; expected sections: data, split,"),
        (lambda p: p["render"].update(chunk="big"), "render.chunk", "an integer or null, got 'big'"),
        (lambda p: p["train"].update(lr="fast"), "train.lr", "a number or null, got 'fast'"),
        (lambda p: p["train"].update(lr=float("inf")), "train.lr", "must be a finite number, got inf"),
        (lambda p: p["train"].update(lr=10**400), "train.lr", "got an integer beyond any float"),
        (lambda p: p["train"].update(seed=-1), "train.seed", ">= 0"),
        (lambda p: p["split"].update(seed=2**64), "split.seed", "<= 4294967295"),
        (lambda p: p["video"].update(fps=0.001), "video.fps", ">= 0.1"),
        (lambda p: p["video"].update(fps=1000), "video.fps", "<= 240"),
        (lambda p: p["video"].update(width=1_000_000), "video.width", "<= 4096, got 1000000"),
        (lambda p: p["video"].update(frames=10**9), "video.frames", "<= 10000"),
        (lambda p: p["data"].update(source=5), "data.source", "a string, got 5"),
        (lambda p: p["data"].update(source=""), "data.source", "is ''; expected sample, an http(s) URL"),
        (lambda p: p.update(train=[1, 2]), "train", "a mapping, got [1, 2]"),
        (lambda p: p["video"].update(path="spiral", elevation=80.0, amplitude=15.0),
         "video.amplitude", "leaves (-89, 89) degrees"),
        (lambda p: p["video"].update(path="spiral", elevation=-80.0, amplitude=15.0),
         "video.amplitude", "leaves (-89, 89) degrees"),
        (lambda p: p["train"].update(steps=True), "train.steps", "an integer"),
        (lambda p: p["data"].update(sha256="z" * 64), "data.sha256", "64 hexadecimal"),
        (lambda p: p["data"].update(near=-1.0), "data.near", ">= 0"),
        (lambda p: p["model"]["nerf"].update(depth=4), "model.nerf.skip",
         "must be < model.nerf.depth (4): the index of a hidden layer, or 0 for no skip connection; got 5"),
        (lambda p: p["model"]["seed"].update(depth=5), "model.seed.skip", "< model.seed.depth (5)"),
        (lambda p: p["train"].update(time_budget=0), "train.time_budget", "> 0.0, got 0"),
        (lambda p: p["data"].update(source="  "), "data.source", "is '  '; expected sample"),
        (lambda p: p["model"]["fast"].update(grid_threshold=1.0), "model.fast.grid_threshold", "< 1.0"),
        (lambda p: p["model"]["fast"].update(levels=1, log2_table_size=27), "model.fast.log2_table_size",
         "<= 26, got 27"),
        (lambda p: p["model"]["fast"].update(sh_degree=5), "model.fast.sh_degree", "<= 4, got 5"),
        (lambda p: p["model"]["seed"].update(mlp_kernel="triton", width=100), "model.seed.width",
         "a power of two and at least 16, got 100"),
    ],
)
def test_bad_values_name_the_key(tmp_path, edit, key, expected):
    path = write(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")  # the file, then the key
    assert message.count("params.yaml") == 1  # named once
    assert key in message and expected in message
    assert "\n" not in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(bad)
    bad.write_text("[a, b]: c\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: section \('a', 'b'\) is not a name; expected"):
        load_params(bad)
    bad.write_bytes(b"data:\n  source: caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text \(byte 0xe9 on line 2\); YAML files"):
        load_params(bad)
    (tmp_path / "params.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"params\.yaml: cannot read it \(Is a directory\); expected the"):
        load_params(tmp_path / "params.yaml")


def test_configs_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="data.near"):
        DataConfig(near=3.0, far=1.0)
    with pytest.raises(ConfigError, match="max_resolution"):
        FastModelConfig(base_resolution=64, max_resolution=32)
    assert SplitConfig().strategy == "tail"
    assert NerfModelConfig(depth=4, skip=0).skip == 0  # no skip connection
    assert SeedModelConfig(depth=6, skip=5).skip == 5  # the last hidden layer


def test_ints_are_accepted_for_floats(tmp_path):
    params = load_params(write(tmp_path, lambda p: p["data"].update(near=1, far=5)))
    assert params.data.near == 1.0 and isinstance(params.data.near, float)


def test_values_as_dvc_exp_run_set_writes_them(tmp_path):
    # `dvc exp run -S` writes params.yaml through DVC's own code (YAML 1.2): 1e-05 is a
    # number there, `yes` a string; the stages must read the file the same way.
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    apply_overrides(str(path), ["train.lr=1e-5", "train.time_budget=1e2", "model.nerf.lr_final=5e-5"])
    assert "lr: 1e-05" in path.read_text()
    params = load_params(path)
    assert (params.train.lr, params.train.time_budget, params.model.nerf.lr_final) == (1e-5, 100.0, 5e-5)
    apply_overrides(str(path), ["train.compile=yes"])
    with pytest.raises(ConfigError, match="train.compile must be true or false, got 'yes'"):
        load_params(path)


def test_dvc_exp_run_set_changes_only_the_line_it_sets(tmp_path):
    # DVC rewrites the whole file for `-S` and writes a null as an empty value; the committed
    # file writes its nulls that way, so an experiment's params.yaml differs from it by the
    # lines set, and a pull request made from one shows no unrelated lines.
    from dvc.utils.hydra import apply_overrides

    committed = (REPO / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(committed)
    apply_overrides(str(path), ["train.steps=5"])
    changed = [(a, b) for a, b in zip(committed.splitlines(), path.read_text().splitlines()) if a != b]
    assert changed == [("  steps: 800", "  steps: 5")]
    apply_overrides(str(path), ["train.steps=800", "train.lr=1e-3"])
    apply_overrides(str(path), ["train.lr=null"])
    assert path.read_text() == committed


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text() + "data:\n  near: 1.0\n")
    lines = len(path.read_text().splitlines())
    with pytest.raises(ConfigError, match=rf"params\.yaml: not valid YAML at line {lines - 1}, column 1: "
                                          r"found duplicate key \"data\" with value .* \(while constructing "
                                          r"a mapping\)$"):
        load_params(path)


def test_the_check_command_finds_a_typo_no_stage_would_read(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    check = [sys.executable, "-m", "nerf.config", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run(check, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith(f"{path}: every section and key known")
    # The typo goes in at the section's head: the workspace's params.yaml may be a `dvc exp`
    # variant's, which DVC rewrites (a null as an empty value).
    text = path.read_text()
    assert "\ndata:\n" in text
    path.write_text(text.replace("\ndata:\n", "\ndata:\n  sha265: abc\n", 1))
    typo = subprocess.run(check, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert typo.returncode == 1
    assert typo.stderr.startswith(f"error: {path}: unknown key data.sha265 in data; expected keys: source, ")


def test_values_at_the_edges_of_their_ranges_are_allowed(tmp_path):
    # 0 means never (checkpoints) and none (validation views); one resolution for every level;
    # the narrowest MLP the Triton kernels take; a spiral that just reaches 89 degrees.
    def edit(p):
        p["train"].update(checkpoint_every=0)
        p["split"].update(val_views=0)
        p["model"]["fast"].update(base_resolution=64, max_resolution=64)
        p["model"]["seed"].update(mlp_kernel="triton", width=16)
        p["video"].update(path="spiral", elevation=-74.0, amplitude=15.0)

    params = load_params(write(tmp_path, edit))
    assert (params.train.checkpoint_every, params.split.val_views) == (0, 0)
    assert params.model.fast.max_resolution == params.model.fast.base_resolution == 64
    assert (params.model.seed.width, params.video.amplitude) == (16, 15.0)
