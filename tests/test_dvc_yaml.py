"""dvc.yaml: each stage runs its script as a module of the repository (``python -m
stages.NAME``, so that it imports the repository's own ``nerf``, also in a queued
experiment's copy, never an installed one) and lists, as dependencies, exactly the nerf
modules that script uses, so that editing library code reruns the stages it affects."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def nerf_imports(path: Path) -> set[str]:
    """Module files of the nerf package that ``path`` imports directly."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nerf":
            if node.module == "nerf":  # from nerf import resume
                found.update(f"nerf/{alias.name}.py" for alias in node.names)
            else:
                found.add(node.module.replace(".", "/") + ".py")
        elif isinstance(node, ast.Import):
            found.update(a.name.replace(".", "/") + ".py" for a in node.names if a.name.startswith("nerf."))
    return found


def closure(script: Path) -> set[str]:
    """The nerf module files ``script`` runs, directly or through others; importing any of
    them first runs the package's ``__init__.py`` (which sets how MKL rounds)."""
    todo, seen = [script], set()
    while todo:
        for module in nerf_imports(todo.pop()) - seen:
            seen.add(module)
            todo.append(REPO / module)
    return seen | {"nerf/__init__.py"} if seen else seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_exactly_the_modules_it_imports(name: str) -> None:
    stage = STAGES[name]
    python, flag, module = stage["cmd"].split()[:3]
    assert (python, flag) == ("python", "-m") and module.startswith("stages."), stage["cmd"]
    script = module.replace(".", "/") + ".py"
    assert script in stage["deps"], stage["cmd"]
    listed = {d for d in stage["deps"] if d.startswith("nerf/")}
    assert listed == closure(REPO / script), f"stage {name}: listed deps differ from the imports of {script}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_help_names_the_command_dvc_runs(name: str) -> None:
    module = STAGES[name]["cmd"].split()[2]
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.startswith(f"usage: python -m {module} "), done.stdout[:80]


def test_no_script_beside_dvc_yaml_repeats_a_path_of_its_vars() -> None:
    # dvc.yaml's vars hold every path once: a folder renamed there must not leave the
    # Makefile (make experiments), CI or the GPU bench reading the old one.
    paths = yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"][0]["paths"].values()
    found = []
    scripts = [REPO / "Makefile", REPO / ".ci/run", *sorted((REPO / ".github").rglob("*.yml")),
               *sorted(REPO.glob("bench/*.sh"))]
    for script in scripts:
        for number, line in enumerate(script.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#"):
                found += [f"{script.relative_to(REPO)}:{number}: {path}" for path in paths
                          if re.search(rf"(^|[^\w/.-]){re.escape(path)}($|/|[^\w])", line)]
    assert not found
