"""The real pipeline, run by DVC in a temporary git copy of the repository."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from nerf.images import comparison, read_png, to_uint8, view_filename
from nerf.metrics import psnr
from nerf.training import processor
from nerf.video import video_frame
from nerf.views import load_views

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough for seconds on a laptop CPU, real enough to exercise every stage.
SMALL = {
    "split.image_size": 40,
    "split.val_views": 2,
    "train.steps": 30,
    "train.val_every": 15,
    "model.fast.levels": 4,
    "model.fast.log2_table_size": 12,
    "model.fast.max_resolution": 64,
    "model.fast.grid_resolution": 32,
    "model.fast.steps_per_diagonal": 64,
    "model.fast.samples_per_batch": 8192,
    "model.nerf.width": 32,
    "model.nerf.depth": 2,
    "model.nerf.skip": 1,
    "model.nerf.coarse_samples": 16,
    "model.nerf.fine_samples": 16,
    "model.nerf.rays_per_batch": 256,
    "video.frames": 6,
    "video.width": 32,
}


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def set_params(path: Path, values: dict) -> None:
    params = yaml.safe_load(path.read_text())
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = params
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _commit(repo: Path, message: str) -> None:
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=repo)
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=repo)


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A git repository holding the committed-or-not files of this one (not its outputs)."""
    files = run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split()
    dest = tmp_path / "repo"
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    for stale in ("dvc.lock", "metrics"):
        target = dest / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    set_params(dest / "params.yaml", SMALL)
    run("git", "init", "-q", cwd=dest)
    _commit(dest, "init")
    return dest


def psnrs_in(exp_show: list) -> list[float]:
    """Every metrics/eval.json psnr in ``dvc exp show --json`` output."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            data = node.get("metrics/eval.json", {})
            if isinstance(data, dict) and isinstance(data.get("data"), dict) and "psnr" in data["data"]:
                found.append(data["data"]["psnr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(exp_show)
    return found


def check_videos_and_novel_poses(repo: Path) -> None:
    """The video stage's orbit, and rendering poses from a JSON file, in a repro'd repository."""
    gif = iio.imread(repo / "videos/video.gif")
    # Frames of colour | gap | depth at video.width, enlarged 256 // 32 = 8 times, under captions.
    blank = np.zeros((32, 32, 3), np.float32)
    assert gif.shape[:3] == (6, *video_frame(blank, blank, 2.0, 6.0).shape[:2])
    assert gif.shape[2] == 8 * (32 + 4 + 32)
    assert iio.immeta(repo / "videos/video.mp4")["codec"] == "h264"
    assert len(iio.imread(repo / "videos/video.mp4")) == 6
    colour = gif[:, -250:-2, :256, :3]  # inside the colour panel, padded or not
    assert np.abs(np.diff(colour.astype(float), axis=0)).mean() > 1  # the view moves

    test = np.load(repo / "data/split/test.npz")
    poses = {"camera_angle_x": 0.5, "frames": [
        {"transform_matrix": test["poses"][i].tolist(), "file_path": f"cam_{i}"} for i in (0, 3)
    ]}
    (repo / "cams.json").write_text(json.dumps(poses))
    run("python", "-m", "stages.render", "--model", "models/model.pt", "--test", "data/split/test.npz",
        "--poses", "cams.json", "--out", "novel", cwd=repo)
    assert sorted(p.name for p in (repo / "novel/rgb").iterdir()) == ["000_cam_0.png", "001_cam_3.png"]
    assert sorted(p.name for p in (repo / "novel").iterdir()) == ["depth", "opacity", "rgb"]
    # The file's field of view is used: without one, test pose 0 renders as the render stage
    # did (the test views' focal); with 0.5 rad, another image.
    del poses["camera_angle_x"]
    poses["frames"] = poses["frames"][:1]
    (repo / "cams_same.json").write_text(json.dumps(poses))
    run("python", "-m", "stages.render", "--model", "models/model.pt", "--test", "data/split/test.npz",
        "--poses", "cams_same.json", "--out", "novel_same", cwd=repo)
    (staged,) = (repo / "renders/rgb").glob("000_*.png")
    same = iio.imread(repo / "novel_same/rgb/000_cam_0.png")
    assert np.array_equal(same, iio.imread(staged))
    assert not np.array_equal(iio.imread(repo / "novel/rgb/000_cam_0.png"), same)
    run("python", "-m", "stages.video", "--model", "models/model.pt", "--test", "data/split/test.npz",
        "--poses", "cams.json", "--out", "novel_video", cwd=repo)
    assert iio.imread(repo / "novel_video/video.gif").shape[0] == 2

    (repo / "bad.json").write_text('{"frames": [{"transform_matrix": [1, 2]}]}')
    bad = run("python", "-m", "stages.render", "--model", "models/model.pt", "--test", "data/split/test.npz",
              "--poses", "bad.json", "--out", "novel", cwd=repo, check=False)
    assert bad.returncode == 1
    assert "error: bad.json: frames[0]: expected transform_matrix as a 4x4" in bad.stderr
    assert (repo / "novel/rgb/000_cam_0.png").is_file()  # the earlier renders are intact
    # A folder of the user's own is not replaced by renders or a video (it would be deleted).
    (repo / "mine").mkdir()
    (repo / "mine/notes.txt").write_text("important")
    for stage in ("render", "video"):
        refused = run("python", "-m", f"stages.{stage}", "--model", "models/model.pt", "--test",
                      "data/split/test.npz", "--poses", "cams.json", "--out", "mine", cwd=repo, check=False)
        assert refused.returncode == 1
        assert "\nerror: mine: holds notes.txt, which writing this folder would delete" in (
            "\n" + refused.stderr)
    # Nor by a model or training logs (checked before training starts).
    for out, live in (("mine", "metrics/train"), ("models", "mine")):
        refused = run("python", "-m", "stages.train", "--split", "data/split", "--out", out, "--live", live,
                      "--checkpoints", "checkpoints", cwd=repo, check=False)
        assert refused.returncode == 1
        assert "\nerror: mine: holds notes.txt, which writing this folder would delete" in (
            "\n" + refused.stderr)
    assert sorted(p.name for p in (repo / "mine").iterdir()) == ["notes.txt"]
    # Nor by a second training on the checkpoint of one still running (a killed `dvc repro`'s).
    model = (repo / "models/model.pt").read_bytes()
    hold = ("import time; from pathlib import Path; from nerf.resume import exclusive\n"
            "with exclusive(Path('checkpoints')):\n    print('held', flush=True); time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = run("python", "-m", "stages.train", "--split", "data/split", "--out", "models", "--live",
                      "metrics/train", "--checkpoints", "checkpoints", cwd=repo, check=False)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert refused.returncode == 1
    assert f"\nerror: checkpoints is in use by another training (pid {holder.pid})" in "\n" + refused.stderr
    assert (repo / "models/model.pt").read_bytes() == model


def test_repro_then_experiment_then_show(repo_copy):
    # The stages must run this repository's nerf (in a queued experiment, its copy's), not
    # the installed one: mark the copy's package and look for the mark in the output.
    init = repo_copy / "nerf/__init__.py"
    init.write_text(init.read_text() + "\nimport sys\nprint('nerf from', __file__, file=sys.stderr)\n")
    result = run("dvc", "repro", cwd=repo_copy)
    assert f"nerf from {init}" in result.stdout + result.stderr
    metrics = json.loads((repo_copy / "metrics/eval.json").read_text())
    assert metrics["n_views"] == 16 and 0 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1
    for kind in ("rgb", "compare", "depth", "opacity"):
        assert len(list((repo_copy / "renders" / kind).glob("*.png"))) == 16
    render_time = json.loads((repo_copy / "metrics/render.json").read_text())["render"]["seconds_per_view"]
    assert 0 < render_time < 60
    # A compare image: the truth beside the render as its PNG holds it, captioned with the PSNR
    # that evaluate gave the view.
    views = load_views(repo_copy / "data/split/test.npz")
    with (repo_copy / "metrics/per_view.csv").open() as table:
        scored = [float(row["psnr"]) for row in csv.DictReader(table)]
    for i in (0, 15):
        name = view_filename(i, views.names[i])
        rgb = read_png(repo_copy / "renders/rgb" / name)
        score = float(psnr(torch.from_numpy(rgb), torch.from_numpy(views.images[i])))
        assert round(score, 4) == scored[i]
        np.testing.assert_array_equal(to_uint8(read_png(repo_copy / "renders/compare" / name)),
                                      to_uint8(comparison(views.images[i], rgb, score)))
    assert (repo_copy / "models/model.pt").is_file()
    assert (repo_copy / "metrics/train/metrics.json").is_file()
    # DVCLive's params say what trained: this CPU, and the torch version.
    trained_on = yaml.safe_load((repo_copy / "metrics/train/params.yaml").read_text())["run"]
    assert re.fullmatch(rf"{re.escape(processor())} CPU, (1 thread|\d+ threads)", trained_on["machine"])
    assert trained_on["torch"] == torch.__version__
    assert "up to date" in run("dvc", "status", cwd=repo_copy).stdout
    check_videos_and_novel_poses(repo_copy)

    # dvc metrics / plots work on what the pipeline wrote.
    shown = run("dvc", "metrics", "show", "--json", cwd=repo_copy).stdout
    assert "psnr" in shown
    run("dvc", "plots", "show", "-o", "plots_html", cwd=repo_copy)
    assert (repo_copy / "plots_html" / "index.html").is_file()
    plots = json.loads(run("dvc", "plots", "show", "--json", cwd=repo_copy).stdout)["data"]
    for name, x in (("PSNR against step", "step"), ("Train PSNR against seconds", "seconds"),
                    ("Validation PSNR against seconds", "seconds")):
        spec = plots[name][0]
        points = spec["content"]["data"]["values"]
        assert points and all(x in point and "psnr" in point for point in points), name
    assert any(key.endswith("videos/video.gif") for key in plots)
    assert not [key for key in plots if key.endswith(".tsv")]  # the curated charts, not one per log file
    # Per-view PSNR: bars as long as the PSNR, one per view (bar_horizontal's x is the number).
    encoding = plots["metrics/per_view.csv"][0]["content"]["encoding"]
    assert (encoding["x"]["field"], encoding["x"]["type"]) == ("psnr", "quantitative")
    assert (encoding["y"]["field"], encoding["y"]["type"]) == ("image", "nominal")
    # A nominal axis sorts its labels as text: the render file names sort in view order.
    labels = [point["image"] for point in plots["metrics/per_view.csv"][0]["content"]["data"]["values"]]
    assert len(labels) > 10 and sorted(labels) == labels and labels[0].startswith("000_")
    # The first validation view at each validation (SMALL: every 15 of 30 steps).
    assert {key for key in plots if "images/val/" in key} == {
        f"metrics/train/plots/images/val/{step}.png" for step in (15, 30)
    }

    # Shared storage: push to a local-folder remote; a fresh clone pulls the model and
    # renders, and then `dvc repro` has nothing to recompute.
    run("dvc", "remote", "add", "-d", "shared", str(repo_copy.parent / "remote"), cwd=repo_copy)
    _commit(repo_copy, "baseline")
    run("dvc", "push", cwd=repo_copy)
    clone = repo_copy.parent / "clone"
    run("git", "clone", "-q", str(repo_copy), str(clone), cwd=repo_copy.parent)
    run("dvc", "pull", cwd=clone)
    assert (clone / "models/model.pt").read_bytes() == (repo_copy / "models/model.pt").read_bytes()
    assert len(list((clone / "renders/compare").glob("*.png"))) == 16
    assert "up to date" in run("dvc", "status", cwd=clone).stdout
    assert "Running stage" not in run("dvc", "repro", cwd=clone).stdout
    # render.chunk tunes rendering speed: it reruns the stages that render the test views,
    # never training.
    set_params(clone / "params.yaml", {"render.chunk": 512})
    assert sorted(json.loads(run("dvc", "status", "--json", cwd=clone).stdout)) == ["render", "video"]

    # A stopped experiment (Ctrl-C) resumes when its command is run again: `dvc exp run`
    # restores the baseline's outputs before it runs, and that must not replace the checkpoint.
    shutil.rmtree(repo_copy / "checkpoints")
    experiment = ["dvc", "exp", "run", "-S", "train.steps=150", "-S", "train.checkpoint_every=20",
                  "-S", "train.val_every=50"]
    stopped_at = _stopped_at_first_checkpoint(experiment, repo_copy, signal.SIGINT, 150)
    resumed = run(*experiment, cwd=repo_copy).stdout
    assert f"resuming from checkpoints/last.pt at step {stopped_at} of 150" in resumed
    assert "up to date" in run("dvc", "status", cwd=repo_copy).stdout

    run("dvc", "exp", "run", "-S", "model.kind=nerf", "-S", "train.steps=20", cwd=repo_copy)
    table = json.loads(run("dvc", "exp", "show", "--json", cwd=repo_copy).stdout)
    values = psnrs_in(table)
    assert len(values) >= 2, table
    # dvc.yaml's top-level params: each experiment's machine is a column of `dvc exp show`.
    machines = json.dumps(table).count('"metrics/train/params.yaml": {"data": {"run": {"machine": ')
    assert machines >= 2, table
    assert all(isinstance(v, float) for v in values)
    diff = run("dvc", "metrics", "diff", "--json", cwd=repo_copy).stdout
    assert "psnr" in diff


def test_bad_params_fail_cleanly_and_keep_every_output(repo_copy):
    # DVC deletes a stage's outputs before running it unless they persist: a bad param in any
    # stage must leave every earlier result in place.
    run("dvc", "repro", cwd=repo_copy)
    outputs = ["data/split/manifest.json", "models/model.pt", "metrics/train/metrics.json",
               "metrics/train/params.yaml", "metrics/train/plots/metrics/train/loss.tsv",
               "metrics/render.json", "videos/video.gif", "metrics/eval.json", "metrics/per_view.csv",
               "metrics/per_view_psnr.png"]
    outputs += [str(p.relative_to(repo_copy)) for p in (repo_copy / "renders").rglob("*.png")]
    before = {name: (repo_copy / name).read_bytes() for name in outputs}
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    for key, bad, message in (
        ("split.test_fraction", 1.5, "split.test_fraction must be < 1"),
        ("train.steps", -5, "train.steps must be >= 1"),
        ("render.chunk", 0, "render.chunk must be >= 1"),
        ("video.frames", 0, "video.frames must be >= 1"),
        ("eval.ssim_sigma", 2.5, "does not match eval.ssim_sigma=2.5"),
    ):
        section, name = key.split(".")
        good = params[section][name]
        set_params(repo_copy / "params.yaml", {key: bad})
        result = run("dvc", "repro", cwd=repo_copy, check=False)
        assert result.returncode != 0 and message in result.stderr + result.stdout, key
        assert {name: (repo_copy / name).read_bytes() for name in outputs} == before, key
        set_params(repo_copy / "params.yaml", {key: good})
    assert "up to date" in run("dvc", "status", cwd=repo_copy).stdout


def _trained(repo: Path) -> tuple[dict, dict[str, bytes]]:
    """The trained weights and the DVCLive history files (curves and images) of the train stage."""
    weights = torch.load(repo / "models/model.pt", weights_only=True)["state_dict"]
    history = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted((repo / "metrics/train/plots").rglob("*"))
        if p.is_file() and "seconds" not in p.name  # wall-clock time differs from run to run
    }
    return weights, history


def _stopped_at_first_checkpoint(cmd: list[str], repo: Path, sig: signal.Signals, steps: int) -> int:
    """Run ``cmd``, signal its whole process group once a checkpoint of a ``steps``-step
    training is on disk, and return the step that checkpoint holds."""
    checkpoint = repo / "checkpoints/last.pt"
    assert not checkpoint.exists()
    log = repo.parent / "stopped.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=repo, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"training ended before it could be stopped:\n{log.read_text()[-2000:]}"
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["fingerprint"]["train.steps"] == str(steps), "a checkpoint this run did not write"
    assert 0 < saved["state"]["step"] < steps
    return saved["state"]["step"]


def test_killed_training_resumes_to_the_same_result(repo_copy, monkeypatch):
    steps = 150
    set_params(repo_copy / "params.yaml",
               {"train.steps": steps, "train.checkpoint_every": 20, "train.val_every": 50})
    _commit(repo_copy, "longer training")
    run("dvc", "repro", "split", cwd=repo_copy)
    checkpoint = repo_copy / "checkpoints/last.pt"

    # Kill `dvc repro` and its training process as soon as the first checkpoint is written.
    killed_at = _stopped_at_first_checkpoint(["dvc", "repro", "train"], repo_copy, signal.SIGKILL, steps)
    assert not (repo_copy / "models/model.pt").exists()

    # The next repro resumes from it, and cleans up what the killed run left half-written.
    resumed = run("dvc", "repro", "train", cwd=repo_copy).stdout
    assert f"resuming from checkpoints/last.pt at step {killed_at} of {steps}" in resumed
    assert not list(repo_copy.glob(".models.tmp-*"))
    assert not list((repo_copy / "metrics").glob(".train.tmp-*"))
    weights, history = _trained(repo_copy)
    model_bytes = (repo_copy / "models/model.pt").read_bytes()
    assert "up to date" in run("dvc", "status", "train", cwd=repo_copy).stdout

    # An uninterrupted run from scratch gives the same weights and history, bit for bit.
    shutil.rmtree(checkpoint.parent)
    fresh = run("dvc", "repro", "--force", "--single-item", "train", cwd=repo_copy).stdout
    assert "training from step 0" in fresh
    weights_again, history_again = _trained(repo_copy)
    # Train loss, PSNR and learning rate, validation PSNR; the validation images at 50, 100, 150.
    assert history_again == history and len(history) == 7
    assert sum(name.endswith(".png") for name in history) == 3
    assert weights_again.keys() == weights.keys()
    assert all(torch.equal(weights_again[k], weights[k]) for k in weights)
    assert (repo_copy / "models/model.pt").read_bytes() == model_bytes  # what DVC hashes

    # A changed param invalidates the checkpoint: training starts over and says why. Model
    # params shape training as much as train's do.
    # A kernel choice imports its kernels' module (here unused: outside the interpreter the
    # CPU runs the PyTorch code), which is said as that module coming into use, not as a
    # change of the code.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    set_params(repo_copy / "params.yaml", {"train.lr": 0.005, "model.fast.grid_threshold": 0.02,
                                           "model.fast.march_kernel": "triton"})
    changed = run("dvc", "repro", "train", cwd=repo_copy).stdout
    assert "starting over from step 0" in changed and "train.lr: None -> 0.005" in changed
    assert "model.fast.grid_threshold: 0.01 -> 0.02" in changed
    assert "model.fast.march_kernel: 'auto' -> 'triton'" in changed
    assert "changed" not in changed.partition("different inputs")[2].partition("starting over")[0]
    if importlib.util.find_spec("triton"):
        assert "nerf.march_kernel: not in use -> in use" in changed

    # An edit of the stage script, which DVC reruns the stage for, does not finish the
    # checkpoint's complete run as if nothing had changed: training starts over (fewer steps,
    # to keep the test short; the script's own entry is what is checked).
    with open(repo_copy / "stages/train.py", "a") as script:
        script.write("# edited\n")
    set_params(repo_copy / "params.yaml", {"train.steps": 10})
    edited = run("dvc", "repro", "train", cwd=repo_copy).stdout
    assert "(code of stages/train.py changed; train.steps: 150 -> 10); starting over from step 0" in edited


def test_queued_sweep_compares_in_one_sorted_table(repo_copy):
    run("dvc", "repro", cwd=repo_copy)
    _commit(repo_copy, "baseline")
    run("dvc", "exp", "run", "--queue", "-n", "short", "-S", "train.steps=10", "-S", "train.lr=0.02",
        "-S", "data.far=6.5", cwd=repo_copy)
    run("dvc", "exp", "run", "--queue", "-n", "paper", "-S", "model.kind=nerf", cwd=repo_copy)
    run("dvc", "exp", "run", "--queue", "-n", "broken", "-S", "train.steps=0", cwd=repo_copy)
    run("dvc", "queue", "start", "-j", "1", cwd=repo_copy)
    deadline = time.monotonic() + 400
    while True:
        status = run("dvc", "queue", "status", cwd=repo_copy).stdout
        if not any(word in status for word in ("Queued", "Running")) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status.count("Success") == 2 and status.count("Failed") == 1, status

    # The README's comparison: the table of `make experiments`, as CSV.
    lines = run("make", "-s", "experiments", "EXP_ARGS=--csv", cwd=repo_copy).stdout.strip().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    # The params that differ, and what they gave; the failed run has no results of its own.
    assert header == ["Experiment", "rev", "typ", "train.seconds", "train.steps_per_second", "val.psnr",
                      "render.seconds_per_view", "psnr", "ssim", "data.far", "model.kind", "train.steps",
                      "train.lr"]
    by_name = {row["Experiment"] or row["rev"]: row for row in rows}
    assert set(by_name) == {"master", "short", "paper"}
    assert (by_name["short"]["train.steps"], by_name["short"]["train.lr"]) == ("10", "0.02")
    assert (by_name["short"]["data.far"], by_name["paper"]["data.far"]) == ("6.5", "6.0")
    assert (by_name["paper"]["model.kind"], by_name["master"]["model.kind"]) == ("nerf", "fast")
    # Best validation PSNR first: variants are picked on the validation views, not the test views.
    experiments = [float(row["val.psnr"]) for row in rows if row["typ"] != "baseline"]
    assert experiments == sorted(experiments, reverse=True) and len(set(experiments)) == 2
    assert all(float(row[key]) > 0 for row in rows for key in ("train.seconds", "render.seconds_per_view",
                                                                "ssim"))

    # A sweep of a knob that retrains nothing (render.chunk: the same renders) gives every row
    # the same training and quality metrics, which the table still shows, and its own render seconds.
    run("dvc", "exp", "remove", "short", "paper", cwd=repo_copy)
    run("dvc", "exp", "run", "-n", "chunk", "-S", "render.chunk=300", cwd=repo_copy)
    lines = run("make", "-s", "experiments", "EXP_ARGS=--csv", cwd=repo_copy).stdout.strip().splitlines()
    header = lines[0].split(",")
    assert header == ["Experiment", "rev", "typ", "train.seconds", "train.steps_per_second", "val.psnr",
                      "render.seconds_per_view", "psnr", "ssim", "model.kind", "train.steps", "render.chunk"]
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    same = ("train.seconds", "train.steps_per_second", "val.psnr", "psnr", "ssim")
    assert len(rows) == 2 and [rows[0][key] for key in same] == [rows[1][key] for key in same]
    assert rows[1]["render.chunk"] == "300" and all(float(row["render.seconds_per_view"]) > 0 for row in rows)


def _workflow_script(step: str, values: dict[str, str]) -> str:
    """The shell of the pull request workflow's step named ``step``, its ``${{ ... }}``
    expressions filled in from ``values``; ``make setup`` is the venv these tests run in."""
    workflow = yaml.safe_load((REPO / ".github/workflows/pr-report.yml").read_text())
    script = next(s["run"] for s in workflow["jobs"]["report"]["steps"] if s.get("name") == step)
    for expression, value in values.items():
        script = script.replace(f"${{{{ {expression} }}}}", value)
    assert "${{" not in script, script
    return script.replace("make setup", ":")


def test_pr_workflow_compares_with_the_base_as_its_runner_reproduced_it(repo_copy, tmp_path):
    """A base committed from another machine (a GPU, another CPU) names outputs whose last bits
    a fresh runner does not reproduce; the workflow commits and tags its own run of the base
    and compares with that, so the report has the base's renders. MKL's compatible code path
    stands in for the other machine (on this project's CPU every output from the split on then
    has other bytes); where it made the same bytes, the report would be the same either way,
    and the test still checks that the workflow compares with its own run."""
    origin = repo_copy
    run("git", "branch", "-M", "main", cwd=origin)
    elsewhere = {**_env(), "MKL_CBWR": "COMPATIBLE"}
    subprocess.run(["dvc", "repro", "-q"], cwd=origin, env=elsewhere, check=True, capture_output=True,
                   timeout=600)
    _commit(origin, "the base, reproduced elsewhere")
    run("git", "checkout", "-q", "-b", "pr", cwd=origin)
    set_params(origin / "params.yaml", {"train.steps": 40})
    _commit(origin, "a pull request: 40 steps")
    runner = tmp_path / "runner"  # actions/checkout: a fresh clone, no DVC cache
    run("git", "clone", "-q", "-b", "pr", str(origin), str(runner), cwd=tmp_path)
    head = run("git", "rev-parse", "HEAD", cwd=runner).stdout.strip()
    values = {"github.base_ref": "main", "github.sha": head}
    github_env = tmp_path / "github_env"
    for step in ("Run the pipeline at the base", "Run the pipeline", "Build the report"):
        result = subprocess.run(["bash", "-eo", "pipefail", "-c", _workflow_script(step, values)], cwd=runner,
                                env={**_env(), "GITHUB_ENV": str(github_env)}, capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0, f"{step}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert github_env.read_text() == "base=main-rerun\n"
    report = (runner / "reports/review.md").read_text()
    assert "# Review: `main-rerun` → `workspace`" in report
    assert "not in this DVC cache" not in report
    assert "Of the 16 views both revisions scored" in report
    static = runner / "reports/review_plots/static"
    assert len(list(static.glob("main-rerun_renders_compare_*.png"))) == 16
