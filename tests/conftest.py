"""Shared fixtures: small data sets built from the real lego data, params files, stage runs."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
LEGO = SHARED_DATA / "nerf_synthetic" / "lego"
sys.path.insert(0, str(REPO))  # the nerf package, also when pytest runs from elsewhere

# Without CUDA, the Triton kernels' tests run them in Triton's interpreter on CPU tensors; the
# choice is made when a kernel module is first imported, so it is made here, before any test.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The tests' tensors are tiny: one thread avoids thread start-up and contention costs
# (measured: 12 ms against up to 0.5 s for a small fast-model step on 2 busy cores).
torch.set_num_threads(1)


def shared_path(rel: str) -> Path:
    """A file under /work/shared/data; skips the test where it is absent."""
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="session")
def lego_frames() -> tuple[float, list[tuple[list, Image.Image]]]:
    """camera_angle_x and (transform_matrix, RGBA image downscaled to 40x40) of 12 real frames."""
    meta = json.loads(shared_path("nerf_synthetic/lego/transforms_train.json").read_text())
    frames = []
    for frame in meta["frames"][:12]:
        with Image.open(LEGO / f"{frame['file_path']}.png") as im:
            small = im.convert("RGBA").resize((40, 40), Image.BOX)
            frames.append((frame["transform_matrix"], small))
    return meta["camera_angle_x"], frames


@pytest.fixture
def make_blender(lego_frames):
    """Builds a small Blender folder: ``layout`` maps a subset to frame indices (0..11)."""
    angle, frames = lego_frames

    def make(folder: Path, layout: dict[str, list[int]] | None = None) -> Path:
        layout = layout or {"train": [0, 1], "test": [2]}
        for subset, indices in layout.items():
            (folder / subset).mkdir(parents=True, exist_ok=True)
            entries = []
            for i in indices:
                matrix, image = frames[i]
                image.save(folder / subset / f"r_{i}.png")
                entries.append({"file_path": f"./{subset}/r_{i}", "transform_matrix": matrix})
            meta = {"camera_angle_x": angle, "frames": entries}
            (folder / f"transforms_{subset}.json").write_text(json.dumps(meta))
        return folder

    return make


def write_npz(path: Path, n: int = 4, h: int = 6, w: int = 8, **arrays) -> Path:
    """A small synthetic tiny-NeRF npz; ``arrays`` replace its arrays (None drops one)."""
    rng = np.random.default_rng(0)
    data = {
        "images": rng.random((n, h, w, 3), dtype=np.float32),
        "poses": np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
        "focal": np.float64(10.0),
    }
    data.update(arrays)
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


def write_params(folder: Path, **sections: dict) -> Path:
    """A complete params.yaml in ``folder``: the defaults with ``sections`` merged in."""
    from nerf.config import Params, to_dict

    params = to_dict(Params())
    for name, values in sections.items():
        params[name].update(values)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# A shell's background job (`make test &`) starts with SIGINT ignored, and every child would
# inherit that, so the tests that stop a stage with Ctrl-C would wait for it in vain. Handled
# here instead of ignored, it is the default again in every child started.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def compile_for_h100(script: str, cache: Path) -> list[str]:
    """Runs ``script`` (which compiles Triton kernels for sm_90 with Triton's own ptxas; no GPU
    needed) outside the interpreter, with its own kernel cache; returns the words it printed."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs ``stages/<name>`` as the pipeline does, in ``cwd``."""
    cmd = [sys.executable, str(REPO / "stages" / name), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``(folder, base_url)``'s folder."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@contextlib.contextmanager
def cpu_threads(n: int):
    """Runs the block with ``n`` CPU threads for PyTorch's ops, then restores the number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Runs the block with writes past ``nbytes`` of any file failing as a full disk would fail
    them (the kernel's RLIMIT_FSIZE: ``OSError`` EFBIG, "File too large"), then lifts it."""
    import resource
    import signal

    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
        signal.signal(signal.SIGXFSZ, handler)
