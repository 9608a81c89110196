"""Which code a fused-kernel choice (auto | torch | triton) runs, for the hash grid and the
ray march alike: auto takes Triton on CUDA only and only where it is installed, triton without
the package is a clear error, and a module that may run its kernels imports them at once
(for the hash grid, the ray march and the packed volume rendering)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO

from nerf.config import FastModelConfig
from nerf.encoding import HashGrid
from nerf.errors import ConfigError
from nerf.models import FastModel
from nerf.occupancy import OccupancyGrid
from nerf.rays import Rays

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
SMALL = {"levels": 2, "log2_table_size": 8, "max_resolution": 32, "grid_resolution": 4,
         "steps_per_diagonal": 8}


def hash_grid(kernel: str) -> HashGrid:
    return HashGrid(levels=2, log2_table_size=8, max_resolution=32, kernel=kernel)


def occupancy_grid(kernel: str) -> OccupancyGrid:
    return OccupancyGrid(resolution=4, bound=1.0, threshold=0.01, steps_per_diagonal=8, kernel=kernel)


def fast_model(kernel: str) -> FastModel:
    # The hash grid's and the march's kernels plain PyTorch: on CUDA, auto would import theirs.
    config = FastModelConfig(**SMALL, hash_kernel="torch", march_kernel="torch", render_kernel=kernel)
    return FastModel(config, 2.0, 6.0, torch.zeros(3))


RAY = Rays(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
# name: (constructor from the choice, whether it runs the kernels on a device, a run of the
# code the choice governs on the CPU, params key, kernels' module)
USERS = {
    "hash grid": (hash_grid, HashGrid.uses_triton, lambda m: m(torch.rand(5, 3)), "model.fast.hash_kernel",
                  "nerf.hash_kernel"),
    "march": (occupancy_grid, OccupancyGrid.uses_triton, lambda m: m.march(RAY, 0.0, 10.0, False),
              "model.fast.march_kernel", "nerf.march_kernel"),
    "rendering": (fast_model, FastModel.render_uses_triton, lambda m: m.render_rays(RAY, False),
                  "model.fast.render_kernel", "nerf.render_kernel"),
}


@pytest.mark.parametrize("user", USERS)
def test_auto_uses_the_kernels_on_cuda_only_and_only_where_triton_is_installed(user, monkeypatch) -> None:
    # uses_triton only inspects the device type: CUDA is asked about without touching a GPU.
    make, uses_triton, _, _, _ = USERS[user]
    pytest.importorskip("triton")
    auto, triton, plain = (make(k) for k in ("auto", "triton", "torch"))  # imports the kernels as set up
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert uses_triton(auto, CUDA) and uses_triton(triton, CUDA) and not uses_triton(plain, CUDA)
    assert not uses_triton(auto, CPU) and not uses_triton(triton, CPU)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton's interpreter runs triton, not auto, on the CPU
    assert uses_triton(triton, CPU) and not uses_triton(auto, CPU)
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now raises ImportError
    assert not uses_triton(auto, CUDA)  # falls back to the PyTorch code, no error


@pytest.mark.parametrize("user", USERS)
def test_a_missing_triton_package_is_a_clear_error(user, monkeypatch) -> None:
    make, _, run, key, _ = USERS[user]
    module = make("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the kernels would run here, on the CPU
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now raises ImportError
    with pytest.raises(ConfigError, match=rf"{key.replace('.', '[.]')} is triton.*pip install triton"):
        run(module)


@pytest.mark.parametrize("user", USERS)
def test_an_unknown_choice_is_an_error(user) -> None:
    with pytest.raises(ValueError, match="auto, torch or triton"):
        USERS[user][0]("cuda")


@pytest.mark.parametrize("kernel", ["triton", "auto", "torch"])
@pytest.mark.parametrize("user", USERS)
def test_a_module_that_may_run_its_kernels_imports_them_at_once(user, kernel) -> None:
    # The train stage fingerprints the source of the nerf modules imported before training
    # (resume.code_digests); the kernels' module must be among them, not imported later.
    # auto runs them only on CUDA, so without CUDA it skips the import (about a second).
    pytest.importorskip("triton")
    make, _, _, _, kernels = USERS[user]
    script = (f"import sys; sys.path.insert(0, 'tests'); from test_kernels import {make.__name__}; "
              f"from nerf.resume import code_digests; before = code_digests(); {make.__name__}({kernel!r}); "
              f"print({kernels!r} in sys.modules, code_digests() != before)")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          check=True)
    imported = kernel == "triton" or (kernel == "auto" and torch.cuda.is_available())
    assert done.stdout.split() == [str(imported), str(imported)]


@pytest.mark.parametrize("user", USERS)
def test_only_cuda_or_the_interpreter_switched_on_runs_the_kernels(user, monkeypatch) -> None:
    # Apple's GPU (MPS) has no Triton backend; TRITON_INTERPRET=0 is Triton's own "off".
    make, uses_triton, _, _, _ = USERS[user]
    pytest.importorskip("triton")
    auto, triton = make("auto"), make("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not uses_triton(auto, torch.device("mps")) and not uses_triton(triton, torch.device("mps"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not uses_triton(triton, CPU) and not uses_triton(auto, CPU)
