"""A review report for two revisions: metric and param diffs, plots, side-by-side renders.

    python -m nerf.report main --out reports/review.md        # main against the workspace
    python -m nerf.report HEAD~1 HEAD --out reports/review.md  # two commits

It runs the real ``dvc metrics diff``, ``dvc params diff`` and ``dvc plots diff``; the
plots (training curves, per-view PSNR, renders) go to ``plots/index.html`` beside the
markdown, which links it and the new revision's truth | render | error images.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAMLError

from nerf.config import parse_yaml
from nerf.errors import DataError, run_stage
from nerf.io import atomic_dir, atomic_file


def _dvc() -> str:
    """The dvc beside this Python (a venv's), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    found = str(local) if local.is_file() else shutil.which("dvc")
    if not found:
        raise DataError("dvc not found next to the Python interpreter or on PATH")
    return found


def _rows(table: str) -> str:
    """A markdown table from dvc, or "" where it has no rows (dvc prints the header alone)."""
    table = table.strip()
    return table if len(table.splitlines()) >= 3 else ""


def _run(cmd: list[str], cwd: Path, what: str, warnings: list[str]) -> str:
    """``cmd``'s output; its last line of error if it fails. What it warns of (``WARNING:``
    lines: a revision whose metrics DVC could not read, which its table shows as ``-``) is
    added to ``warnings``, once each."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["(no output)"]
        raise DataError(f"{what} failed: {lines[-1]}")
    for line in result.stderr.splitlines():
        said = line.removeprefix("WARNING:").strip()
        if line.startswith("WARNING:") and said not in warnings:
            warnings.append(said)
    return result.stdout


def _dvc_root(repo: Path) -> Path:
    repo = repo.resolve()
    for folder in (repo, *repo.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise DataError(f"{repo} is not in a DVC repository (no .dvc folder); run from the project")


def _git(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def _commit(rev: str, root: Path) -> str:
    """The commit ``rev`` names: a git revision, or a DVC experiment's name (as ``dvc exp
    show`` lists it; dvc accepts those too, git does not)."""
    result = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], root)
    if result.returncode == 0:
        return result.stdout.strip()
    if "not a git repository" in result.stderr.lower():
        raise DataError(f"{root} is not a git repository; the report compares git revisions")
    experiments = _git(["for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], root).stdout
    for line in experiments.splitlines():
        commit, ref = line.split(" ", 1)
        if ref.rsplit("/", 1)[-1] == rev:
            return commit
    raise DataError(f"unknown git revision {rev!r} (try `git fetch`, a branch, tag or commit, or an "
                    "experiment's name from `dvc exp show`)")


def _link(target: Path, out: Path) -> str:
    return Path(os.path.relpath(target, out.parent)).as_posix()


def _compare_plot(root: Path, commit: str | None) -> str | None:
    """The plots entry of the side-by-side images, ``${paths.renders}/compare`` with the
    ``paths`` var of the project's dvc.yaml (where every path is written once) at ``commit``
    (None: the workspace's), as ``dvc plots diff`` names that revision's images; None where
    that dvc.yaml is missing or unreadable, or has no such var."""
    if commit is None:
        try:
            text = (root / "dvc.yaml").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    else:
        shown = _git(["show", f"{commit}:./dvc.yaml"], root)  # ./: the project's folder in git
        if shown.returncode != 0:
            return None
        text = shown.stdout
    try:
        spec = parse_yaml(text)
        return next(f"{v['paths']['renders']}/compare" for v in spec["vars"] if "paths" in v)
    except (YAMLError, KeyError, TypeError, StopIteration):
        return None


def _side_by_side(new: str | None, compare: str, plots: Path, out: Path) -> list[str]:
    """Markdown table rows linking the new revision's truth | render | error images (the
    plots entry ``compare``): the copies ``dvc plots diff`` wrote beside the report (a
    revision's from the DVC cache, the workspace's as ``workspace_...``), so that the links
    hold wherever ``reports/`` is published (a CI artifact has no ``renders/`` beside it)."""
    prefix = f"{new or 'workspace'}_{compare}_".replace(os.sep, "_").replace("/", "_")
    images = sorted((plots / "static").glob(f"{_glob_escape(prefix)}*.png"))
    named = [(p.stem[len(prefix):], p) for p in images]
    return [f"| {name} | [{name}.png]({_link(path, out)}) |" for name, path in named]


def _glob_escape(text: str) -> str:
    """``text`` matched literally by glob (revision names may hold ``[`` etc.)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def build_report(old: str, new: str | None, out: Path, repo: Path | None = None) -> Path:
    """Writes the markdown report comparing ``old`` with ``new`` (None: the workspace) to ``out``.

    ``repo`` (default: the current folder) is in the DVC project; a relative ``out`` is taken
    from the current folder. The plots go to ``plots/`` beside ``out``, replaced as a whole.
    """
    root = _dvc_root(Path.cwd() if repo is None else Path(repo))
    commits = [_commit(rev, root) for rev in (old, new) if rev is not None]
    # dvc prints nothing for one commit named twice, which would read as "no metrics".
    same = len(commits) == 2 and commits[0] == commits[1]
    out = Path(out).absolute()
    revs = [old] if new is None else [old, new]
    new_name = new or "workspace"
    dvc = _dvc()

    warnings: list[str] = []
    metrics = _rows(_run([dvc, "metrics", "diff", *revs, "--md", "--all"], root, "dvc metrics diff",
                         warnings))
    params = _rows(_run([dvc, "params", "diff", *revs, "--md"], root, "dvc params diff", warnings))
    with atomic_dir(out.parent / "plots", holds=("index.html", "static")) as tmp:
        _run([dvc, "plots", "diff", *revs, "-o", str(tmp)], root, "dvc plots diff", warnings)
    plots = out.parent / "plots"
    index = plots / "index.html"
    compare = _compare_plot(root, None if new is None else commits[-1])
    rows = _side_by_side(new, compare, plots, out) if compare else []

    lines = [
        f"# Review: `{old}` → `{new_name}`",
        "",
        *([f"`{old}` and `{new_name}` are the same commit ({commits[0][:7]}): nothing differs.", ""]
          if same else []),
        *(["DVC warned (a `-` below may be a value it could not read):", "",
           *(f"- {said}" for said in warnings), ""] if warnings else []),
        "## Metrics",
        "",
        metrics or ("No metric differs." if same else "No metrics found."),
        "",
        "## Params",
        "",
        params or "No param changes.",
        "",
        "## Plots",
        "",
        f"[Training curves, per-view PSNR, renders and the orbit video, `{old}` against `{new_name}`]"
        f"({_link(index, out)})"
        if index.is_file()
        else "No plots found.",
        "",
        f"## Side-by-side renders of `{new_name}` (truth | render | error)",
        "",
    ]
    if rows:
        lines += ["| view | image |", "| --- | --- |", *rows]
    elif compare:
        lines.append(
            f"No `{compare}` images for `{new_name}` (run `dvc repro`, or `dvc pull` for a revision)."
        )
    else:
        whose = "the workspace's" if new is None else f"`{new}`'s"
        lines.append(f"No side-by-side images: {whose} dvc.yaml sets no `paths.renders` var.")
    with atomic_file(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nerf.report", description=__doc__.split("\n")[0])
    parser.add_argument("old", help="the base revision, e.g. main")
    parser.add_argument(
        "new", nargs="?", default=None, help="the revision to review (default: the workspace)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/review.md"), help="the markdown file")
    args = parser.parse_args(argv)
    print(build_report(args.old, args.new, args.out))


if __name__ == "__main__":
    run_stage(main)
