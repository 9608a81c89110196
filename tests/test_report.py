"""The review report, built by the real dvc from commits of a small DVC project (no training)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from nerf.errors import DataError
from nerf.report import build_report

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in the stage: this one
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "DVC_NO_ANALYTICS": "1",
}

# The stage: metrics, per-view plot and side-by-side images that follow train.steps.
MAKE_METRICS = """\
import json, os, yaml
from PIL import Image
steps = yaml.safe_load(open("params.yaml"))["train"]["steps"]
psnr = 20 + steps / 200
os.makedirs("metrics", exist_ok=True)
os.makedirs("out/views/compare", exist_ok=True)
json.dump({"psnr": psnr, "ssim": 0.9, "n_views": 3}, open("metrics/eval.json", "w"))
os.makedirs("metrics/train", exist_ok=True)
json.dump({"train": {"seconds": steps / 10}}, open("metrics/train/metrics.json", "w"))
yaml.safe_dump({"run": {"machine": f"box {1 + steps // 400}"}}, open("metrics/train/params.yaml", "w"))
rows = "".join(f"{v},view_{v:03d},{v:03d}_view_{v:03d},{psnr + v},0.9\\n" for v in range(3))
open("metrics/per_view.csv", "w").write("view,name,image,psnr,ssim\\n" + rows)
for v in range(2):
    Image.new("RGB", (6, 2), (steps % 256, v, 0)).save(f"out/views/compare/{v:03d}_view_{v:03d}.png")
"""

# The renders' folder is not the pipeline's default: the report reads it from the vars.
DVC_YAML = """\
vars:
  - paths:
      renders: out/views
      per_view: metrics/per_view.csv
      eval: metrics/eval.json
      train_log: metrics/train
stages:
  fake:
    cmd: python make_metrics.py
    deps: [make_metrics.py]
    params: [train.steps]
    outs:
      - ${paths.renders}/compare
      - ${paths.train_log}/params.yaml: {cache: false}
    metrics:
      - ${paths.eval}: {cache: false}
      - ${paths.train_log}/metrics.json: {cache: false}
    plots:
      - ${paths.per_view}: {cache: false, x: view, y: psnr}
params:
  - ${paths.train_log}/params.yaml
plots:
  - ${paths.renders}/compare
"""


def run(*cmd: str, cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def set_steps(repo: Path, steps: int) -> None:
    (repo / "params.yaml").write_text(f"train:\n  steps: {steps}\n  lr: 0.01\n")


def commit(repo: Path, steps: int) -> None:
    set_steps(repo, steps)
    run(str(BIN / "dvc"), "repro", "-q", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", f"steps {steps}", cwd=repo)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Two commits: train.steps 100 (psnr 20.5), then 300 (psnr 21.5)."""
    repo = tmp_path_factory.mktemp("project")
    run("git", "init", "-q", cwd=repo)
    run(str(BIN / "dvc"), "init", "-q", cwd=repo)
    (repo / "make_metrics.py").write_text(MAKE_METRICS)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    commit(repo, 100)
    commit(repo, 300)
    return repo


def table_links(markdown: str) -> list[str]:
    """The link targets of the test views table's rows."""
    section = markdown.split("## Test views")[1]
    return [line.split("](")[1].rstrip(" |)") for line in section.splitlines() if "](" in line]


def test_report_between_two_commits(project, tmp_path):
    (tmp_path / "review_plots" / "static").mkdir(parents=True)
    (tmp_path / "review_plots" / "static" / "stale.png").write_bytes(b"an earlier report's")
    out = build_report("HEAD~1", "HEAD", tmp_path / "review.md", repo=project)
    text = out.read_text()
    # First, the outcome: evaluate's summary and training's seconds at both revisions.
    assert text.splitlines()[2] == (
        "**Mean test PSNR 20.50 → 21.50 dB (+1.00), SSIM 0.9000 → 0.9000 (0.0000)**, "
        "over 3 test views; training took 10 s → 30 s on box 1.")
    metrics = text.split("## Metrics")[1].split("## Params")[0]
    assert "metrics/eval.json" in metrics and "20.5" in metrics and "21.5" in metrics
    assert "ssim" in metrics  # unchanged metrics are shown too (0.9 at both)
    assert not (tmp_path / "review_plots" / "static" / "stale.png").exists()  # replaced whole
    params = text.split("## Params")[1].split("## Plots")[0]
    assert "train.steps" in params and "100" in params and "300" in params
    assert "train.lr" not in params and "run.machine" not in params  # unchanged params are left out
    assert "Not reproduced" not in text
    assert "(review_plots/index.html)" in text and (tmp_path / "review_plots/index.html").is_file()
    html = (tmp_path / "review_plots/index.html").read_text()
    assert "metrics/per_view.csv" in html and html.count("<img src=") == 4  # 2 images x 2 revisions
    # The new revision's images, read from the DVC cache by `dvc plots diff`.
    links = table_links(text)
    assert links == [f"review_plots/static/HEAD_out_views_compare_00{v}_view_00{v}.png" for v in range(2)]
    with Image.open(tmp_path / links[0]) as image:
        assert image.getpixel((0, 0)) == (300 % 256, 0, 0)
    # Each row names its view as the render stage does, without the revision's prefix.
    rows = [line for line in text.split("## Test views")[1].splitlines() if "](" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| 000_view_000", "| 001_view_001"]
    # Each view's PSNR at both revisions (per_view.csv, in git), its change, and its image; the
    # third view has a score and no image.
    section = text.split("## Test views")[1]
    assert ("Of the 3 views both revisions scored, PSNR rose on 3 and fell on 0 (by 0.01 dB or more); "
            "largest rise: 000_view_000 (+1.00 dB).") in section
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0] == "| view | HEAD~1 | HEAD | change | image |"
    assert table[2] == f"| 000_view_000 | 20.50 | 21.50 | +1.00 | [000_view_000.png]({links[0]}) |"
    assert table[4] == "| 002_view_002 | 22.50 | 23.50 | +1.00 | - |"


def test_the_headline_says_what_a_side_lacks_and_when_the_test_sets_differ():
    from nerf.report import Outcome, _headline, _number

    both = _headline(Outcome(28.7271, 0.94611, 16, 103.1), Outcome(28.73, 0.946108, 16, 110.86))
    assert both == ("**Mean test PSNR 28.73 → 28.73 dB (0.00), SSIM 0.9461 → 0.9461 (0.0000)**, "
                    "over 16 test views; training took 103 s → 111 s.")
    other_views = _headline(Outcome(27.0, 0.9, 16, None), Outcome(26.5, 0.91234, 10, None))
    assert other_views == ("**Mean test PSNR 27.00 → 26.50 dB (-0.50), SSIM 0.9000 → 0.9123 (+0.0123)**, "
                           "over 16 → 10 test views (other test sets: the means do not compare).")
    no_base = _headline(Outcome(None, None, None, None), Outcome(30.0, 0.95, 16, 99.6))
    assert no_base == "**Mean test PSNR - → 30.00 dB (-), SSIM - → 0.9500 (-)**; training took - → 100 s."
    perfect = _headline(Outcome(float("inf"), 1.0, 2, None), Outcome(float("inf"), 1.0, 2, None))
    assert perfect == "**Mean test PSNR inf → inf dB (-), SSIM 1.0000 → 1.0000 (0.0000)**, over 2 test views."
    assert _headline(Outcome(None, 0.9, 3, 5.0), Outcome(None, 0.9, 3, 5.0)) == ""  # no PSNR on either side
    # The machine the seconds were measured on: named where both sides share it, both where
    # they differ, none where a side does not say (a run from before DVCLive logged it).
    cpu, gpu = "AMD EPYC CPU, 2 threads", "NVIDIA H100 80GB HBM3"
    one = _headline(Outcome(28.0, 0.9, 16, 110.9, cpu), Outcome(28.5, 0.9, 16, 103.1, cpu))
    assert one.endswith("; training took 111 s → 103 s on AMD EPYC CPU, 2 threads.")
    two = _headline(Outcome(28.0, 0.9, 16, 110.9, cpu), Outcome(28.5, 0.9, 16, 3.2, gpu))
    assert two.endswith("; training took 111 s → 3 s (other machines, AMD EPYC CPU, 2 threads → "
                        "NVIDIA H100 80GB HBM3: the seconds do not compare).")
    unknown = _headline(Outcome(28.0, 0.9, 16, 110.9, None), Outcome(28.5, 0.9, 16, 3.2, gpu))
    assert unknown.endswith("; training took 111 s → 3 s.")
    # evaluate writes a perfect render's PSNR as the string "inf"; anything else not a number is none.
    summary = {"psnr": "inf", "ssim": True, "n_views": "many", "train": {"seconds": 12}}
    assert _number(summary, "psnr") == float("inf") and _number(summary, "train", "seconds") == 12.0
    assert _number(summary, "ssim") is None and _number(summary, "n_views") is None
    assert _number(summary, "psnr", "mean") is None and _number(None, "psnr") is None


def test_the_outcome_is_read_from_the_files_the_vars_name_and_survives_odd_values(tmp_path):
    from nerf.report import Outcome, _outcome

    spec = {"vars": [{"paths": {"eval": "m/eval.json", "train_log": "m/train"}}]}
    (tmp_path / "m" / "train").mkdir(parents=True)
    (tmp_path / "m/eval.json").write_text('{"psnr": "inf", "ssim": 1.0, "n_views": 16.0}')
    (tmp_path / "m/train/metrics.json").write_text('{"train": {"seconds": 7.5}}')
    assert _outcome(tmp_path, None, spec) == Outcome(float("inf"), 1.0, 16, 7.5)
    for views in ('"inf"', "2.5", '"nan"'):  # a view count that is no whole number is none
        (tmp_path / "m/eval.json").write_text(f'{{"psnr": 30, "n_views": {views}}}')
        assert _outcome(tmp_path, None, spec) == Outcome(30.0, None, None, 7.5)
    (tmp_path / "m/train/metrics.json").write_text("{not json")
    assert _outcome(tmp_path, None, spec).seconds is None
    (tmp_path / "m/train/params.yaml").write_text("run:\n  machine: AMD EPYC CPU, 2 threads\n  torch: 2.9\n")
    assert _outcome(tmp_path, None, spec).machine == "AMD EPYC CPU, 2 threads"
    for odd in ("run:\n  machine: 3\n", "run: [1]\n", "{not yaml: [", "machine: box\n"):
        (tmp_path / "m/train/params.yaml").write_text(odd)
        assert _outcome(tmp_path, None, spec).machine is None
    assert _outcome(tmp_path, None, {"vars": [{"paths": {}}]}) == Outcome(None, None, None, None)


def test_two_reports_in_one_folder_keep_their_own_plots(project, tmp_path):
    ahead = build_report("HEAD~1", "HEAD", tmp_path / "ahead.md", repo=project)
    back = build_report("HEAD", "HEAD~1", tmp_path / "back.md", repo=project)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ahead.md", "ahead_plots", "back.md", "back_plots"]
    for report, steps in ((ahead, 300), (back, 100)):  # each links its own new revision's images
        text = report.read_text()
        assert f"({report.stem}_plots/index.html)" in text
        links = table_links(text)
        assert len(links) == 2 and all(link.startswith(f"{report.stem}_plots/static/") for link in links)
        with Image.open(tmp_path / links[0]) as image:
            assert image.getpixel((0, 0)) == (steps % 256, 0, 0)


def test_the_params_table_tells_null_from_missing_and_keeps_a_bar_in_its_cell(project, tmp_path):
    """dvc params diff gives null for a null param and a missing one alike (and its markdown
    table splits a value holding ``|`` into two cells)."""
    repo = tmp_path / "repo"
    shutil.copytree(project, repo, symlinks=True)

    def params_rows(old: str) -> dict[str, str]:
        text = build_report(old, None, tmp_path / "review.md", repo=repo).read_text()
        table = text.split("## Params")[1].split("## Plots")[0]
        return {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| params.yaml")}

    (repo / "params.yaml").write_text('train:\n  steps: "300"\n  lr: null\n  note: a|b\n  flag: true\n')
    rows = params_rows("HEAD")
    assert rows == {"train.steps": '| params.yaml | train.steps | 300 | "300" |',  # a number, then text
                    "train.lr": "| params.yaml | train.lr | 0.01 | null |",
                    "train.note": "| params.yaml | train.note | - | a\\|b |",
                    "train.flag": "| params.yaml | train.flag | - | true |"}
    run("git", "commit", "-qam", "lr null, a note and a flag", cwd=repo)
    (repo / "params.yaml").write_text('train:\n  steps: "300"\n  note: a|b\n  flag: true\n')
    assert params_rows("HEAD") == {"train.lr": "| params.yaml | train.lr | null | - |"}  # removed
    # Between two commits, each one's file is read.
    assert params_rows("HEAD~1")["train.lr"] == "| params.yaml | train.lr | 0.01 | - |"
    text = build_report("HEAD~1", "HEAD", tmp_path / "two.md", repo=repo).read_text()
    assert "| params.yaml | train.lr | 0.01 | null |" in text
    # Equal in Python, not in type: 300 (HEAD~1's) against 300.0.
    (repo / "params.yaml").write_text("train:\n  steps: 300.0\n  lr: 0.01\n")
    assert params_rows("HEAD~1") == {"train.steps": "| params.yaml | train.steps | 300 | 300.0 |"}


def test_a_report_from_a_subfolder_of_the_project(project, tmp_path):
    text = build_report("HEAD~1", "HEAD", tmp_path / "review.md", repo=project / "metrics").read_text()
    assert "20.5" in text and "21.5" in text


def test_what_dvc_warns_of_is_in_the_report(project, tmp_path):
    # An unreadable dvc.yaml in the workspace: dvc shows its metrics as "-" and only warns.
    repo = tmp_path / "repo"
    shutil.copytree(project, repo, symlinks=True)
    (repo / "dvc.yaml").write_text("stages: [unclosed\n")
    text = build_report("HEAD", None, tmp_path / "review.md", repo=repo).read_text()
    head, metrics = text.split("## Metrics")
    assert "DVC warned" in head and "YAML file structure is corrupted" in head
    assert head.count("- failed to load metrics in revision 'workspace'") == 1
    assert "- could not check that `workspace` was reproduced: dvc status failed: " in head
    assert "| 21.5 " in metrics and "| -" in metrics
    clean = build_report("HEAD~1", "HEAD", tmp_path / "clean.md", repo=project).read_text()
    assert "DVC warned" not in clean


def test_one_commit_under_two_names_says_so(project, tmp_path):
    head = run("git", "rev-parse", "HEAD", cwd=project).strip()
    text = build_report("HEAD", head, tmp_path / "review.md", repo=project).read_text()
    assert f"`HEAD` and `{head}` are the same commit ({head[:7]}): nothing differs." in text
    assert "No metric differs." in text and "No metrics found." not in text


def test_a_branch_name_holding_a_bar_stays_in_its_table_cells(project, tmp_path):
    run("git", "branch", "-f", "base|1", "HEAD~1", cwd=project)  # git allows | in a branch name
    try:
        text = build_report("base|1", "HEAD", tmp_path / "review.md", repo=project).read_text()
    finally:
        run("git", "branch", "-D", "base|1", cwd=project)
    assert "| Path | Param | base\\|1 | HEAD |" in text
    assert "| view | base\\|1 | HEAD | change | image |" in text
    assert "| 000_view_000 | 20.50 | 21.50 | +1.00 | [000_view_000.png](" in text


def test_a_plots_folder_of_the_users_own_beside_the_report_is_kept(project, tmp_path):
    (tmp_path / "review_plots").mkdir()
    (tmp_path / "review_plots" / "notes.txt").write_text("important")
    said = r"review_plots: holds notes\.txt, which writing this folder would delete"
    with pytest.raises(DataError, match=said):
        build_report("HEAD~1", "HEAD", tmp_path / "review.md", repo=project)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["review_plots"]
    assert [p.name for p in (tmp_path / "review_plots").iterdir()] == ["notes.txt"]


def test_an_experiment_is_named_as_dvc_exp_show_lists_it(project, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(project, repo, symlinks=True)
    run(str(BIN / "dvc"), "exp", "run", "-q", "-n", "more-steps", "-S", "train.steps=700", cwd=repo)
    run("git", "checkout", "-q", "--", ".", cwd=repo)  # the workspace back at HEAD
    text = build_report("HEAD", "more-steps", tmp_path / "review.md", repo=repo).read_text()
    metrics = text.split("## Metrics")[1].split("## Params")[0]
    assert "21.5" in metrics and "23.5" in metrics  # 20 + steps / 200 at 300 and 700 steps
    with pytest.raises(DataError, match="unknown git revision 'steps'"):  # a name, not its end
        build_report("HEAD", "steps", tmp_path / "review.md", repo=repo)


def test_an_experiment_name_run_on_two_commits_is_the_one_of_the_commit_checked_out(project, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(project, repo, symlinks=True)
    run("git", "checkout", "-q", "HEAD~1", cwd=repo)
    run(str(BIN / "dvc"), "exp", "run", "-q", "-n", "twice", "-S", "train.steps=900", cwd=repo)  # 24.5
    run("git", "checkout", "-q", "--", ".", cwd=repo)
    run("git", "checkout", "-q", "-", cwd=repo)
    run(str(BIN / "dvc"), "exp", "run", "-q", "-n", "twice", "-S", "train.steps=700", cwd=repo)  # 23.5
    run("git", "checkout", "-q", "--", ".", cwd=repo)

    refs = run("git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps", cwd=repo)
    by_baseline = {"".join(ref.split("/")[2:4]): commit for ref, commit in map(str.split, refs.splitlines())}
    head, before = (run("git", "rev-parse", rev, cwd=repo).strip() for rev in ("HEAD", "HEAD~1"))

    def metrics(old: str) -> str:
        text = build_report(old, "twice", tmp_path / "review.md", repo=repo).read_text()
        assert "the same commit" not in text
        return text.split("## Metrics")[1].split("## Params")[0]

    # Against the other commit's experiment: dvc resolves "twice" as the report must.
    assert "24.5" in metrics(by_baseline[before]) and "23.5" in metrics(by_baseline[before])
    run("git", "checkout", "-q", "HEAD~1", cwd=repo)
    assert "24.5" in metrics(by_baseline[head]) and "23.5" in metrics(by_baseline[head])
    run("git", "commit", "-q", "--allow-empty", "-m", "neither", cwd=repo)
    with pytest.raises(DataError, match="experiment name 'twice' is ambiguous: 2 experiments have it"):
        build_report("HEAD", "twice", tmp_path / "review.md", repo=repo)


def test_report_against_the_workspace(project, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(project, repo, symlinks=True)
    set_steps(repo, 500)
    run(str(BIN / "dvc"), "repro", "-q", cwd=repo)
    out = build_report("HEAD", None, tmp_path / "reports" / "review.md", repo=repo)
    text = out.read_text()
    assert "`HEAD` → `workspace`" in text
    assert "21.5" in text and "22.5" in text and "20.5" not in text
    assert "train.steps" in text and "500" in text
    # Trained on another machine: the headline says its seconds do not compare, and the
    # params table, from the top-level params file that DVCLive writes, names both machines.
    assert text.splitlines()[2].endswith("training took 30 s → 50 s (other machines, box 1 → box 2: "
                                         "the seconds do not compare).")
    assert "| metrics/train/params.yaml | run.machine | box 1 | box 2 |" in text
    assert (tmp_path / "reports/review_plots/index.html").is_file()
    # Links inside reports/ (the CI artifact holds nothing else): dvc plots diff's copies.
    links = table_links(text)
    assert links == [f"review_plots/static/workspace_out_views_compare_00{v}_view_00{v}.png"
                     for v in range(2)]
    with Image.open(out.parent / links[1]) as image:  # the workspace's images
        assert image.getpixel((0, 0)) == (500 % 256, 1, 0)


def test_a_revision_committed_without_dvc_repro_is_flagged(project, tmp_path):
    """Params and code edited without ``dvc repro``: its metrics are the last run's, and the
    reviewer must not read "train.steps changed, the metrics did not" as the change's effect."""
    repo = tmp_path / "repo"
    shutil.copytree(project, repo, symlinks=True)
    set_steps(repo, 500)
    (repo / "make_metrics.py").write_text(MAKE_METRICS + "# edited\n")
    run("git", "commit", "-qam", "no repro", cwd=repo)
    text = build_report("HEAD~1", "HEAD", tmp_path / "review.md", repo=repo).read_text()
    head = text.split("## Metrics")[0]
    assert "## Not reproduced" in head and "`HEAD` was not reproduced after these edits" in head
    assert "- fake: `make_metrics.py`, param `train.steps`" in head
    assert "`HEAD~1` was not" not in head  # reproduced when committed
    assert run("git", "worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 1  # removed
    # The workspace, edited since: its outputs are the last run's; only the edit is named.
    (repo / "make_metrics.py").write_text(MAKE_METRICS)
    run(str(BIN / "dvc"), "repro", "-q", cwd=repo)
    run("git", "commit", "-qam", "repro", cwd=repo)
    set_steps(repo, 700)
    text = build_report("HEAD", None, tmp_path / "review.md", repo=repo).read_text()
    head = text.split("## Metrics")[0]
    assert "`workspace` was not reproduced" in head and "- fake: param `train.steps`\n" in head
    assert "`HEAD` was not" not in head
    # A fresh clone has no cached outputs: missing is not edited.
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    text = build_report("HEAD~2", None, tmp_path / "review.md", repo=clone).read_text()  # both reproduced
    assert "## Not reproduced" not in text


def empty_project(tmp_path: Path) -> Path:
    """A git + DVC repository with one commit and no stages."""
    repo = tmp_path / "empty"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    run(str(BIN / "dvc"), "init", "-q", cwd=repo)
    run("git", "commit", "-qm", "init", cwd=repo)
    return repo


def test_the_new_revisions_renders_folder_is_read_from_its_own_dvc_yaml(tmp_path):
    """A commit that renames ``paths.renders``: each side of the report is named by its own
    revision's dvc.yaml, as ``dvc plots diff`` names its images."""
    repo = tmp_path / "project"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    run(str(BIN / "dvc"), "init", "-q", cwd=repo)
    (repo / "make_metrics.py").write_text(MAKE_METRICS)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    commit(repo, 100)
    (repo / "make_metrics.py").write_text(MAKE_METRICS.replace("out/views", "out/frames"))
    (repo / "dvc.yaml").write_text(DVC_YAML.replace("renders: out/views", "renders: out/frames"))
    commit(repo, 300)
    prefix = "review_plots/static/{}_out_{}_compare_000_view_000.png"
    back = build_report("HEAD", "HEAD~1", tmp_path / "back/review.md", repo=repo)  # new: the old name
    assert table_links(back.read_text())[0] == prefix.format("HEAD~1", "views")
    ahead = build_report("HEAD~1", "HEAD", tmp_path / "ahead/review.md", repo=repo)
    assert table_links(ahead.read_text())[0] == prefix.format("HEAD", "frames")
    (repo / "make_metrics.py").write_text(MAKE_METRICS.replace("out/views", "out/pictures"))
    (repo / "dvc.yaml").write_text(DVC_YAML.replace("renders: out/views", "renders: out/pictures"))
    run(str(BIN / "dvc"), "repro", "-q", cwd=repo)  # renamed again, not committed
    here = build_report("HEAD", None, tmp_path / "here/review.md", repo=repo)
    assert table_links(here.read_text())[0] == prefix.format("workspace", "pictures")


def test_per_view_psnr_of_an_older_table_and_of_views_one_revision_lacks(tmp_path):
    """The base's per-view table written before the ``image`` column (``view,name,psnr,ssim``)
    is matched to the new one's view by view; a view only one revision scored has no change;
    a view that fell is counted and named, one that moved by less than 0.01 dB is not."""
    write = 'open("metrics/per_view.csv", "w").write("view,name,image,psnr,ssim\\n" + rows)'
    assert write in MAKE_METRICS
    before = ("view,name,psnr,ssim\\n0,view_000,30.0,0.9\\n1,view_001,25.0,0.9\\n2,view_002,27.0,0.9\\n"
              "3,view_003,26.0,0.9\\n4,view_004,24.0,0.9\\n")
    after = ("view,name,image,psnr,ssim\\n0,view_000,000_view_000,29.5,0.9\\n"
             "1,view_001,001_view_001,25.25,0.9\\n"
             "3,view_003,003_view_003,26.004,0.9\\n4,view_004,004_view_004,23.996,0.9\\n")
    repo = tmp_path / "project"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    run(str(BIN / "dvc"), "init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    for steps, table in ((100, before), (300, after)):
        (repo / "make_metrics.py").write_text(
            MAKE_METRICS.replace(write, f'open("metrics/per_view.csv", "w").write("{table}")'))
        commit(repo, steps)
    text = build_report("HEAD~1", "HEAD", tmp_path / "review.md", repo=repo).read_text()
    section = text.split("## Test views")[1]
    assert ("Of the 4 views both revisions scored, PSNR rose on 1 and fell on 1 (by 0.01 dB or more); "
            "largest rise: 001_view_001 (+0.25 dB); largest fall: 000_view_000 (-0.50 dB).") in section
    links = table_links(text)
    assert [line for line in section.splitlines() if line.startswith("| 0")] == [
        f"| 000_view_000 | 30.00 | 29.50 | -0.50 | [000_view_000.png]({links[0]}) |",
        f"| 001_view_001 | 25.00 | 25.25 | +0.25 | [001_view_001.png]({links[1]}) |",
        "| 003_view_003 | 26.00 | 26.00 | 0.00 | - |",  # within 0.01 dB: neither rose nor fell
        "| 004_view_004 | 24.00 | 24.00 | 0.00 | - |",
        "| 002_view_002 | 27.00 | - | - | - |",
    ]
    # A workspace whose dvc.yaml has no paths.per_view var: no scores of its own; each revision's
    # table is found by its own dvc.yaml.
    (repo / "dvc.yaml").write_text(DVC_YAML.replace("      per_view: metrics/per_view.csv\n", ""))
    text = build_report("HEAD", None, tmp_path / "here.md", repo=repo).read_text()
    section = text.split("## Test views")[1]
    assert "views both revisions scored" not in section
    assert [line.split(" | ")[:4] for line in section.splitlines() if line.startswith("| 0")] == [
        ["| 000_view_000", "29.50", "-", "-"], ["| 001_view_001", "25.25", "-", "-"],
        ["| 003_view_003", "26.00", "-", "-"], ["| 004_view_004", "24.00", "-", "-"]]


def test_a_revision_whose_renders_are_not_in_the_cache_still_has_its_curves_compared(project, tmp_path):
    """A fresh clone (CI's: no DVC remote) has none of the base's cached outputs; DVC then drew
    none of the base's plots, git-tracked ones included, and said so on a line the report dropped."""
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    set_steps(clone, 500)
    run(str(BIN / "dvc"), "repro", "-q", cwd=clone)
    text = build_report("HEAD", None, tmp_path / "review.md", repo=clone).read_text()
    assert "- DVC failed to load some plots for following revisions: 'HEAD'." in text
    assert "The renders and orbit video of `HEAD` are not in this DVC cache" in text
    html = (tmp_path / "review_plots/index.html").read_text()
    assert '"rev": "HEAD"' in html and '"rev": "workspace"' in html  # per_view.csv, both sides
    assert "[those of the other](review_plots/cached.html)" in text
    cached = (tmp_path / "review_plots/cached.html").read_text()
    assert "workspace_out_views_compare_000" in cached
    links = table_links(text)
    assert links[0] == "review_plots/static/workspace_out_views_compare_000_view_000.png"
    assert all((tmp_path / link).is_file() for link in links)


def test_the_plots_kept_in_git_are_those_of_no_cached_output():
    from nerf.report import _dvc_yaml, _git_plots

    plots = _git_plots(_dvc_yaml(REPO, None))  # the pipeline's own dvc.yaml
    assert plots == ["metrics/per_view.csv", "metrics/per_view_psnr.png", "PSNR against step",
                     "Train PSNR against seconds", "Validation PSNR against seconds",
                     "Learning rate against step", "metrics/train/plots/images"]


def test_a_project_with_nothing_to_compare_says_so(tmp_path):
    repo = empty_project(tmp_path)
    text = build_report("HEAD", None, tmp_path / "review.md", repo=repo).read_text()
    assert "No metrics found." in text and "No param changes." in text and "No plots found." in text
    assert "No side-by-side images: the workspace's dvc.yaml sets no `paths.renders` var." in text
    assert "|---" not in text  # no empty tables


def test_the_dvc_beside_python_is_preferred_to_one_on_path(tmp_path, monkeypatch):
    """A venv's report uses the venv's dvc, whatever an older dvc on PATH would say."""
    repo = empty_project(tmp_path)
    other = tmp_path / "other-bin"
    other.mkdir()
    (other / "dvc").write_text("#!/bin/sh\necho 'the wrong dvc' >&2\nexit 3\n")
    (other / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}{os.environ.get('PATH', '')}")
    assert "No metrics found." in build_report("HEAD", None, tmp_path / "review.md", repo=repo).read_text()


def test_unknown_revision_is_a_one_line_error(project, tmp_path):
    with pytest.raises(DataError, match="unknown git revision 'no-such-branch'"):
        build_report("HEAD", "no-such-branch", tmp_path / "review.md", repo=project)
    assert not (tmp_path / "review.md").exists()
    cmd = [sys.executable, "-m", "nerf.report", "no-such-branch", "--out", str(tmp_path / "r.md")]
    env = {**ENV, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        cmd, cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        ("error: unknown git revision 'no-such-branch' (try `git fetch`, a branch, tag or commit, or an "
         "experiment's name from `dvc exp show`)")
    ]


def test_outside_a_dvc_project_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not in a DVC repository"):
        build_report("HEAD", None, tmp_path / "review.md", repo=tmp_path)


def test_run_keeps_each_warning_once_and_fails_with_the_last_line_of_its_error(tmp_path):
    from nerf.report import _UNLOADED, _run

    def command(stdout: str, stderr: str, code: int) -> list[str]:
        script = ("import sys; sys.stdout.write(sys.argv[1]); sys.stderr.write(sys.argv[2]); "
                  "sys.exit(int(sys.argv[3]))")
        return [sys.executable, "-c", script, stdout, stderr, str(code)]

    warnings = ["earlier"]
    stderr = f"WARNING: twice\nWARNING: twice\n{_UNLOADED}'HEAD'.\n"
    assert _run(command("out\n", stderr, 0), tmp_path, "this", warnings) == "out\n"
    assert warnings == ["earlier", "twice", f"{_UNLOADED}'HEAD'."]
    with pytest.raises(DataError, match=r"^this failed: ERROR: the cause$"):
        _run(command("progress\n", "WARNING: w\nERROR: the cause\n", 2), tmp_path, "this", [])
    with pytest.raises(DataError, match=r"^this failed: two$"):  # no stderr: stdout's last line
        _run(command("one\ntwo\n", "", 1), tmp_path, "this", [])


def test_an_edited_cmd_or_git_tracked_output_is_not_reproduced(project, tmp_path):
    from nerf.report import _status

    repo = tmp_path / "repo"
    shutil.copytree(project, repo, symlinks=True)
    assert _status(repo) == {}
    (repo / "metrics/eval.json").write_text('{"psnr": 99, "ssim": 0.9}')  # a metric edited by hand
    (repo / "dvc.yaml").write_text(DVC_YAML.replace("make_metrics.py\n", "make_metrics.py --fast\n", 1))
    assert _status(repo) == {"fake": ["its cmd", "`metrics/eval.json`"]}


def test_a_dvc_project_in_a_subfolder_of_its_git_repository_is_checked_there(tmp_path):
    top = tmp_path / "top"
    repo = top / "project"
    repo.mkdir(parents=True)
    run("git", "init", "-q", cwd=top)
    run(str(BIN / "dvc"), "init", "-q", "--subdir", cwd=repo)
    (repo / "make_metrics.py").write_text(MAKE_METRICS)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    commit(repo, 100)
    set_steps(repo, 300)
    run("git", "commit", "-qam", "no repro", cwd=repo)
    report = build_report("HEAD~1", "HEAD", tmp_path / "review.md", repo=repo)
    head = report.read_text().split("## Metrics")[0]
    assert "could not check" not in head
    assert "`HEAD` was not reproduced" in head and "- fake: param `train.steps`\n" in head
