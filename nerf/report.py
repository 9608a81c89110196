"""A review report for two revisions: the outcome, metric and param diffs, plots, per-view PSNR and renders.

    python -m nerf.report main --out reports/review.md        # main against the workspace
    python -m nerf.report HEAD~1 HEAD --out reports/review.md  # two commits

It opens with one line: the mean test PSNR and SSIM at both revisions, their change, and
training's seconds. It runs the real ``dvc metrics diff``, ``dvc params diff`` and ``dvc
plots diff``; the plots (training curves, per-view PSNR, renders) go to ``<name>_plots/index.html`` beside the
markdown ``<name>.md`` (``reports/review_plots/`` for ``reports/review.md``: each report in a
folder has its own), which links it, and lists each test view's PSNR at both revisions with
a link to the new revision's truth | render | error image. A revision
committed without ``dvc repro`` after an edit is named at the top (``dvc status`` there).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from ruamel.yaml import YAMLError

from nerf.config import parse_yaml
from nerf.errors import DataError, run_stage
from nerf.images import view_filename
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


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed command said last (its error), from stderr or else stdout."""
    lines = (result.stderr or result.stdout).strip().splitlines() or ["(no output)"]
    return lines[-1]


def _run(cmd: list[str], cwd: Path, what: str, warnings: list[str]) -> str:
    """``cmd``'s output; its last line of error if it fails. What it warns of (``WARNING:``
    lines: a revision whose metrics DVC could not read, which its table shows as ``-``) is
    added to ``warnings``, once each."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DataError(f"{what} failed: {_last_line(result)}")
    for line in result.stderr.splitlines():
        said = line.removeprefix("WARNING:").strip()
        if line.startswith(("WARNING:", _UNLOADED)) and said not in warnings:
            warnings.append(said)
    return result.stdout


# What `dvc plots diff` says (no WARNING: prefix) of a revision whose plots include an output
# not in the DVC cache: it then draws none of that revision's plots.
_UNLOADED = "DVC failed to load some plots for following revisions: "


def _unloaded(warnings: list[str]) -> list[str]:
    """The revisions ``dvc plots diff`` drew nothing of, by its warning: ``'workspace, HEAD'.``"""
    said = next((w for w in warnings if w.startswith(_UNLOADED)), None)
    return [] if said is None else said.removeprefix(_UNLOADED).strip(" .'").split(", ")


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
    # refs/exps/<baseline[:2]>/<baseline[2:]>/<name>; one name may be run on several baselines.
    named = [line.split(" ", 1) for line in experiments.splitlines() if line.rsplit("/", 1)[-1] == rev]
    if len(named) == 1:
        return named[0][0]
    if named:  # as dvc picks: the one of the commit checked out
        head = _git(["rev-parse", "HEAD"], root).stdout.strip()
        for commit, ref in named:
            if "".join(ref.split("/")[2:4]) == head:
                return commit
        raise DataError(f"experiment name {rev!r} is ambiguous: {len(named)} experiments have it, none of "
                        f"the commit checked out; name one by its commit: "
                        + ", ".join(commit[:7] for commit, _ in named))
    raise DataError(f"unknown git revision {rev!r} (try `git fetch`, a branch, tag or commit, or an "
                    "experiment's name from `dvc exp show`)")


def _link(target: Path, out: Path) -> str:
    return Path(os.path.relpath(target, out.parent)).as_posix()


def _text_at(root: Path, commit: str | None, path: str) -> str | None:
    """The project's file ``path`` (relative to ``root``) at ``commit`` (None: the
    workspace's); None where it is missing or unreadable."""
    if commit is None:
        try:
            return (root / path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    shown = _git(["show", f"{commit}:./{path}"], root)  # ./: the project's folder in git
    return shown.stdout if shown.returncode == 0 else None


def _dvc_yaml(root: Path, commit: str | None) -> dict | None:
    """The project's dvc.yaml at ``commit`` (None: the workspace's), with ``${...}`` of its
    vars filled in (the only interpolation this project's uses); None where it is missing or
    unreadable."""
    text = _text_at(root, commit, "dvc.yaml")
    if text is None:
        return None
    try:
        spec = parse_yaml(text)
        known = {k: v for entry in spec.get("vars", []) if isinstance(entry, dict) for k, v in entry.items()}
    except (YAMLError, AttributeError, TypeError):
        return None

    def fill(match: re.Match) -> str:
        value = known
        for key in match[1].split("."):
            value = value[key]
        return str(value)

    def filled(node):
        if isinstance(node, str):
            return re.sub(r"\$\{([^}]+)\}", fill, node)
        if isinstance(node, dict):
            return {filled(k): filled(v) for k, v in node.items()}
        return [filled(v) for v in node] if isinstance(node, list) else node

    try:
        return filled(spec) | {"vars": spec.get("vars", [])}
    except (KeyError, TypeError):
        return None


_MISSING = object()  # a param a revision's file does not have (where null is a value)


def _params_at(root: Path, commit: str | None, path: str) -> dict | None:
    """A params file (YAML or JSON) at ``commit`` as a tree; None where it cannot be read."""
    text = _text_at(root, commit, path)
    try:
        tree = None if text is None else parse_yaml(text)
    except YAMLError:
        return None
    return tree if isinstance(tree, dict) else None


def _param(tree: dict | None, key: str, said: object) -> object:
    """The value of the dotted ``key`` in ``tree``, ``_MISSING`` where it has none; ``said``
    (what DVC gave, its null meaning either) where the file could not be read."""
    if tree is None:
        return _MISSING if said is None else said
    node: object = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _reads_as_text(text: str) -> bool:
    """Whether YAML reads ``text`` unquoted as that text (``a|b``), not as a number, boolean,
    null or list (``300``, ``true``, ``[1]``)."""
    try:
        return isinstance(parse_yaml(text), str)
    except YAMLError:
        return False


def _cell(value: object) -> str:
    """A param's value in the markdown table: ``-`` for none, ``null``, ``true``, text
    quoted where it would read as another type (``"300"``), its ``|`` escaped so that it
    stays in its cell."""
    if value is _MISSING:
        return "-"
    if isinstance(value, str):
        text = value if _reads_as_text(value) else json.dumps(value)
    else:
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return _in_cell(text)


def _in_cell(text: str) -> str:
    """``text`` kept in one markdown table cell: its ``|`` escaped (a value, or a revision's
    name: git allows ``|`` in a branch name)."""
    return text.replace("|", "\\|")


def _params_table(diff: dict, commits: tuple[str | None, str | None], names: tuple[str, str],
                  root: Path) -> str:
    """The params that differ between two revisions, as a markdown table, from ``dvc params
    diff --json --all`` (``diff``: every param of either revision, by file). DVC gives null
    for a param that is null and for one a revision lacks, and leaves out a change between
    the two; each revision's file is read to tell them apart. "" where nothing differs."""
    rows = []
    for path, params in sorted(diff.items()):
        trees = [_params_at(root, commit, path) for commit in commits]
        for key, said in sorted(params.items()):
            old, new = (_param(tree, key, said.get(side)) for tree, side in zip(trees, ("old", "new")))
            if (type(old), old) != (type(new), new):  # 1 against "1" or true differs too
                rows.append(f"| {path} | {key} | {_cell(old)} | {_cell(new)} |")
    if not rows:
        return ""
    header = f"| Path | Param | {_in_cell(names[0])} | {_in_cell(names[1])} |"
    return "\n".join([header, "| --- | --- | --- | --- |", *rows])


def _paths_var(spec: dict | None, name: str) -> str | None:
    """``${paths.<name>}`` of a dvc.yaml (where every path is written once); None where it
    has no such var."""
    try:
        return next(str(v["paths"][name]) for v in spec["vars"] if "paths" in v)
    except (KeyError, TypeError, StopIteration):
        return None


def _compare_plot(spec: dict | None) -> str | None:
    """The plots entry of the side-by-side images, ``${paths.renders}/compare``, as ``dvc
    plots diff`` names that revision's images; None where the dvc.yaml has no such var."""
    renders = _paths_var(spec, "renders")
    return None if renders is None else f"{renders}/compare"


def _per_view_psnr(root: Path, commit: str | None, spec: dict | None) -> dict[str, float]:
    """{view: PSNR in dB} from evaluate's per-view table (``${paths.per_view}`` of the
    revision's dvc.yaml, kept in git) at ``commit`` (None: the workspace), each view named as
    its render file without ``.png`` (``000_view_064``; tables written before the ``image``
    column are named from ``view`` and ``name``); {} where there is none or it cannot be read."""
    path = _paths_var(spec, "per_view")
    text = None if path is None else _text_at(root, commit, path)
    scores: dict[str, float] = {}
    try:
        for row in csv.DictReader(io.StringIO(text or "")):
            image = row.get("image") or view_filename(int(row["view"]), row["name"]).removesuffix(".png")
            scores[image] = float(row["psnr"])
    except (KeyError, ValueError, TypeError, csv.Error):
        return {}
    return scores


def _signed(value: float | None, digits: int = 2) -> str:
    """A change to ``digits`` decimals, signed unless it rounds to 0; ``-`` for none."""
    if value is None or math.isnan(value):
        return "-"
    return f"{0:.{digits}f}" if round(value, digits) == 0 else f"{value:+.{digits}f}"


def _db(value: float | None, signed: bool = False) -> str:
    """A PSNR (or its change, :func:`_signed`) in the views table: two decimals, ``-`` for none."""
    if signed:
        return _signed(value)
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


class Outcome(NamedTuple):
    """What a revision's run came to, from its metrics files in git; None where it has none."""

    psnr: float | None  # mean test PSNR, dB (``${paths.eval}``)
    ssim: float | None
    n_views: int | None
    seconds: float | None  # training time (``${paths.train_log}/metrics.json``, DVCLive's)
    machine: str | None = None  # what trained (``run.machine`` of ``${paths.train_log}/params.yaml``)


def _number(tree: object, *keys: str) -> float | None:
    """``tree[keys[0]][keys[1]]...`` of a metrics file as a float (``"inf"`` too); None where
    it is missing or not a number."""
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    if isinstance(tree, bool) or not isinstance(tree, (int, float, str)):
        return None
    try:
        return float(tree)
    except ValueError:
        return None


def _outcome(root: Path, commit: str | None, spec: dict | None) -> Outcome:
    """The mean test PSNR, SSIM and view count of evaluate's summary, and training's seconds
    and machine, at ``commit`` (None: the workspace), each None where the revision lacks it."""

    def read(path: str | None) -> object:
        text = None if path is None else _text_at(root, commit, path)
        try:
            return json.loads(text or "null")
        except ValueError:
            return None

    summary = read(_paths_var(spec, "eval"))
    log = _paths_var(spec, "train_log")
    training = read(None if log is None else f"{log}/metrics.json")
    views = _number(summary, "n_views")
    whole = views is not None and views.is_integer()  # not inf, nan or 2.5
    run = None if log is None else _params_at(root, commit, f"{log}/params.yaml")  # DVCLive's params
    machine = _param(run, "run.machine", None)
    return Outcome(_number(summary, "psnr"), _number(summary, "ssim"),
                   int(views) if whole else None, _number(training, "train", "seconds"),
                   machine if isinstance(machine, str) else None)


def _headline(old: Outcome, new: Outcome) -> str:
    """One line, the report's first: mean test PSNR and SSIM at both revisions and their
    change, over how many views, and training's seconds, with the machine they were measured
    on (said where the two differ, whose seconds then do not compare); "" where neither has a
    PSNR."""
    if old.psnr is None and new.psnr is None:
        return ""

    def change(before: float | None, after: float | None, digits: int) -> str:
        return _signed(None if before is None or after is None else after - before, digits)

    def ssim(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    line = (f"**Mean test PSNR {_db(old.psnr)} → {_db(new.psnr)} dB ({change(old.psnr, new.psnr, 2)}), "
            f"SSIM {ssim(old.ssim)} → {ssim(new.ssim)} ({change(old.ssim, new.ssim, 4)})**")
    if old.n_views is not None and old.n_views == new.n_views:
        line += f", over {new.n_views} test views"
    elif old.n_views is not None and new.n_views is not None:
        line += f", over {old.n_views} → {new.n_views} test views (other test sets: the means do not compare)"
    if old.seconds is not None or new.seconds is not None:
        seconds = ["-" if s is None else f"{s:.0f} s" for s in (old.seconds, new.seconds)]
        line += f"; training took {seconds[0]} → {seconds[1]}"
        if old.machine is not None and old.machine == new.machine:
            line += f" on {old.machine}"
        elif old.machine is not None and new.machine is not None:
            line += f" (other machines, {old.machine} → {new.machine}: the seconds do not compare)"
    return line + "."


def _git_plots(spec: dict | None) -> list[str]:
    """The plots of a dvc.yaml (top-level names or paths, and stages' plots) whose files are
    all outside the DVC cache (``cache: false``, so in git): what ``dvc plots diff`` can draw
    for a revision whose cached outputs are not here."""
    if spec is None:
        return []

    def entries(items) -> list[tuple[str, dict]]:
        """(path or name, options) of a list of ``path`` or ``{path: options}``."""
        pairs = []
        for item in items or []:
            pairs += [(item, {})] if isinstance(item, str) else [(k, v or {}) for k, v in item.items()]
        return pairs

    stages = spec.get("stages", {}).values()
    cached = [path for stage in stages for kind in ("outs", "metrics", "plots")
              for path, options in entries(stage.get(kind)) if options.get("cache", True)]
    plots = [(path, [path]) for stage in stages for path, _ in entries(stage.get("plots"))]
    for name, options in entries(spec.get("plots")):
        axes = [options.get(axis) for axis in ("x", "y")]
        files = [file for axis in axes if isinstance(axis, dict) for file in axis]
        plots.append((name, files or [name]))
    return [name for name, files in plots
            if not any(f == out or f.startswith(f"{out}/") for f in files for out in cached)]


# What `dvc status` says of a stage whose dvc.yaml entry is not the one dvc.lock ran.
_DEFINITION = {"changed command": "its cmd", "changed checksum": "its definition in dvc.yaml"}


def _status(folder: Path) -> dict[str, list[str]]:
    """{stage: what was edited since ``dvc.lock`` recorded its run}, by ``dvc status`` in
    ``folder``: params, files (code, git-tracked outputs such as metrics) and its cmd. What is
    missing does not count: a checkout has none of the outputs in the DVC cache, nor the deps
    made of them."""
    result = subprocess.run([_dvc(), "status", "--json"], cwd=folder, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise DataError(f"dvc status failed: {_last_line(result).removeprefix('ERROR:').strip()}")
    edited: dict[str, list[str]] = {}
    for stage, entries in json.loads(result.stdout or "{}").items():
        found = [_DEFINITION[e] for e in entries if isinstance(e, str) and e in _DEFINITION]
        for entry in (e for e in entries if isinstance(e, dict)):
            for kind in ("changed deps", "changed outs"):
                for path, state in entry.get(kind, {}).items():
                    if isinstance(state, dict):  # a params file: {key: state}
                        found += [f"param `{key}`" for key in state]
                    elif state in ("modified", "new"):  # not "deleted", "not in cache"
                        found.append(f"`{path}`")
        if found:
            edited[stage] = found
    return edited


def _unreproduced(root: Path, commit: str | None) -> dict[str, list[str]]:
    """What ``dvc.lock`` does not match at ``commit`` (None: the workspace), as ``_status``:
    a commit is checked out to a temporary git worktree (hooks off: a ``dvc install``ed
    post-checkout hook would run ``dvc checkout`` there) and removed after."""
    if commit is None:
        return _status(root)
    top = Path(_git(["rev-parse", "--show-toplevel"], root).stdout.strip()).resolve()
    with tempfile.TemporaryDirectory(prefix="nerf-report-") as tmp:
        tree = Path(tmp) / "tree"
        added = _git(["-c", "core.hooksPath=/dev/null", "worktree", "add", "--quiet", "--detach",
                      str(tree), commit], root)
        if added.returncode != 0:
            raise DataError(f"git worktree add failed: {_last_line(added)}")
        try:
            return _status(tree / root.relative_to(top))
        finally:
            _git(["worktree", "remove", "--force", str(tree)], root)


def _unreproduced_lines(revs: dict[str, str | None], root: Path, warnings: list[str]) -> list[str]:
    """The report's section on each revision (name: commit, None for the workspace) whose
    metrics and plots are not those of its params and code; what could not be checked goes to
    ``warnings``."""
    lines = []
    for name, commit in revs.items():
        try:
            edited = _unreproduced(root, commit)
        except DataError as error:
            warnings.append(f"could not check that `{name}` was reproduced: {error}")
            continue
        if edited:
            said = (f"`{name}` was not reproduced after these edits (`dvc status` there), so its "
                    "metrics and plots are not those of its params and code (`dvc repro`, and commit "
                    "dvc.lock):")
            lines += [said, "",
                      *(f"- {stage}: {', '.join(found)}" for stage, found in edited.items()), ""]
    return ["## Not reproduced", "", *lines] if lines else []


def _side_by_side(new: str | None, compare: str, plots: Path, out: Path) -> dict[str, str]:
    """{view: markdown link} to each of the new revision's truth | render | error images (the
    plots entry ``compare``): the copies ``dvc plots diff`` wrote beside the report (a
    revision's from the DVC cache, the workspace's as ``workspace_...``), so that the links
    hold wherever ``reports/`` is published (a CI artifact has no ``renders/`` beside it)."""
    prefix = f"{new or 'workspace'}_{compare}_".replace(os.sep, "_").replace("/", "_")
    images = sorted((plots / "static").glob(f"{_glob_escape(prefix)}*.png"))
    named = [(p.stem[len(prefix):], p) for p in images]
    return {name: f"[{name}.png]({_link(path, out)})" for name, path in named}


def _views_summary(old: dict[str, float], new: dict[str, float]) -> str:
    """One line on the views both revisions scored: how many rose and fell (by 0.01 dB or
    more), and the largest rise and fall; "" where they scored none in common."""
    changes = {view: new[view] - old[view] for view in new if view in old}
    changes = {view: change for view, change in changes.items() if not math.isnan(change)}
    if not changes:
        return ""
    rose = [view for view, change in changes.items() if change >= 0.005]
    fell = [view for view, change in changes.items() if change <= -0.005]
    line = (f"Of the {len(changes)} views both revisions scored, PSNR rose on {len(rose)} and fell on "
            f"{len(fell)} (by 0.01 dB or more)")
    extremes = []
    if rose:
        top = max(rose, key=changes.get)
        extremes.append(f"largest rise: {top} ({_db(changes[top], signed=True)} dB)")
    if fell:
        bottom = min(fell, key=changes.get)
        extremes.append(f"largest fall: {bottom} ({_db(changes[bottom], signed=True)} dB)")
    return line + "".join(f"; {extreme}" for extreme in extremes) + "."


def _views_table(names: tuple[str, str], old: dict[str, float], new: dict[str, float],
                 images: dict[str, str]) -> list[str]:
    """The test views as a markdown table: each one's PSNR (dB) at both revisions, the change
    and the new revision's truth | render | error image; in the new revision's order, then
    views only the old one scored. [] where there are no views."""
    views = list(dict.fromkeys([*new, *images, *old]))
    if not views:
        return []
    rows = [f"| view | {_in_cell(names[0])} | {_in_cell(names[1])} | change | image |",
            "| --- | --- | --- | --- | --- |"]
    for view in views:
        before, after = old.get(view), new.get(view)
        change = None if before is None or after is None else after - before
        rows.append(f"| {view} | {_db(before)} | {_db(after)} | {_db(change, signed=True)} | "
                    f"{images.get(view, '-')} |")
    return rows


def _glob_escape(text: str) -> str:
    """``text`` matched literally by glob (revision names may hold ``[`` etc.)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _plots_line(old: str, new: str, unloaded: list[str], plots: Path, out: Path) -> str:
    """The report's link to ``index.html`` in its ``plots`` folder, and what it lacks where
    DVC could not load a revision's cached outputs (its page of those, ``cached.html``,
    beside it)."""
    index, cached = plots / "index.html", plots / "cached.html"
    if not index.is_file():
        return "No plots found."
    if not unloaded:
        return (f"[Training curves, per-view PSNR, renders and the orbit video, `{old}` against `{new}`]"
                f"({_link(index, out)})")
    missing = " and ".join(f"`{rev}`" for rev in unloaded)
    line = (f"[Training curves, per-view PSNR and validation images, `{old}` against `{new}`]"
            f"({_link(index, out)}). The renders and orbit video of {missing} are not in this DVC "
            "cache (`dvc pull`, or `dvc repro` at that revision)")
    drawn = cached.is_file() and len(unloaded) < 2  # one side was loaded whole
    return line + (f": [those of the other]({_link(cached, out)})." if drawn else ".")


def plots_folder(out: Path) -> Path:
    """Where the report ``out`` (``reports/review.md``) puts its plots: ``reports/review_plots``,
    so that two reports in one folder keep their own."""
    return out.with_name(f"{out.stem}_plots")


def build_report(old: str, new: str | None, out: Path, repo: Path | None = None) -> Path:
    """Writes the markdown report comparing ``old`` with ``new`` (None: the workspace) to ``out``.

    ``repo`` (default: the current folder) is in the DVC project; a relative ``out`` is taken
    from the current folder. The plots go to ``<out's stem>_plots/`` beside ``out``
    (:func:`plots_folder`), replaced as a whole.
    """
    root = _dvc_root(Path.cwd() if repo is None else Path(repo))
    commits = [_commit(rev, root) for rev in (old, new) if rev is not None]
    # dvc prints nothing for one commit named twice, which would read as "no metrics".
    same = len(commits) == 2 and commits[0] == commits[1]
    out = Path(out).absolute()
    revs = [old] if new is None else [old, new]
    new_name = new or "workspace"
    dvc = _dvc()

    new_commit = None if new is None else commits[-1]  # None: the workspace
    warnings: list[str] = []
    sides = {old: commits[0]} | ({} if same else {new_name: new_commit})
    stale = _unreproduced_lines(sides, root, warnings)
    metrics = _rows(_run([dvc, "metrics", "diff", *revs, "--md", "--all"], root, "dvc metrics diff",
                         warnings))
    diff = json.loads(_run([dvc, "params", "diff", *revs, "--json", "--all"], root, "dvc params diff",
                           warnings) or "{}")
    params = "" if same else _params_table(diff, (commits[0], new_commit), (old, new_name), root)
    spec = _dvc_yaml(root, new_commit)
    plots = plots_folder(out)
    with atomic_dir(plots, holds=("index.html", "static", "cached.html")) as tmp:
        _run([dvc, "plots", "diff", *revs, "-o", str(tmp)], root, "dvc plots diff", warnings)
        unloaded, kept = _unloaded(warnings), _git_plots(spec)
        if unloaded and kept:
            # Again with the plots kept in git (curves, per-view PSNR, validation images), which
            # every revision has: compared side by side; the first page keeps what the cache held.
            os.replace(tmp / "index.html", tmp / "cached.html")
            _run([dvc, "plots", "diff", *revs, "--targets", *kept, "-o", str(tmp)], root, "dvc plots diff",
                 [])
    compare = _compare_plot(spec)
    images = _side_by_side(new, compare, plots, out) if compare else {}
    old_spec = _dvc_yaml(root, commits[0])
    scores = (_per_view_psnr(root, commits[0], old_spec), _per_view_psnr(root, new_commit, spec))
    summary = _views_summary(*scores)
    outcomes = (_outcome(root, commits[0], old_spec), _outcome(root, new_commit, spec))
    headline = "" if same else _headline(*outcomes)

    lines = [
        f"# Review: `{old}` → `{new_name}`",
        "",
        *([headline, ""] if headline else []),
        *([f"`{old}` and `{new_name}` are the same commit ({commits[0][:7]}): nothing differs.", ""]
          if same else []),
        *(["DVC warned (a `-` below may be a value it could not read):", "",
           *(f"- {said}" for said in warnings), ""] if warnings else []),
        *stale,
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
        _plots_line(old, new_name, unloaded, plots, out),
        "",
        f"## Test views: PSNR (dB), and the side-by-side renders of `{new_name}` (truth | render | error)",
        "",
        *([summary, ""] if summary else []),
    ]
    if not images and compare:
        advice = "run `dvc repro`, or `dvc pull` for a revision"
        lines += [f"No `{compare}` images for `{new_name}` ({advice}).", ""]
    elif not images:
        whose = "the workspace's" if new is None else f"`{new}`'s"
        lines += [f"No side-by-side images: {whose} dvc.yaml sets no `paths.renders` var.", ""]
    lines += _views_table((old, new_name), *scores, images)
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
