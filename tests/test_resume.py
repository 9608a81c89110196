"""The train stage's checkpoint: fingerprints, and when a run may resume from one."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nerf import resume
from nerf.errors import TrainingError

CPU = torch.device("cpu")
PARAMS = {"model": {"kind": "fast", "fast": {"levels": 8}}, "train": {"steps": 100, "lr": None}}


def _fingerprint(tmp_path, params=PARAMS, data: bytes = b"views"):
    views = tmp_path / "train.npz"
    views.write_bytes(data)
    return resume.fingerprint(params, [views], CPU)


def _state(step: int, seconds: float = 1.0) -> dict:
    return {"step": step, "seconds": seconds, "weights": torch.arange(4.0)}


def test_flatten_names_every_leaf_by_its_dotted_key() -> None:
    assert resume.flatten(PARAMS) == {
        "model.kind": "'fast'", "model.fast.levels": "8", "train.steps": "100", "train.lr": "None",
    }


def test_fingerprint_covers_params_input_bytes_code_and_device(tmp_path) -> None:
    base = _fingerprint(tmp_path)
    assert base == _fingerprint(tmp_path)
    assert base["device"] == "cpu" and base["torch version"] == torch.__version__
    assert len(base["code of nerf.resume"]) == 64 and len(base["code of nerf.io"]) == 64
    other_data = _fingerprint(tmp_path, data=b"other views")
    assert resume.differences(base, other_data) == [f"file {tmp_path / 'train.npz'} changed"]
    other_params = _fingerprint(tmp_path, params={**PARAMS, "train": {"steps": 200, "lr": 0.005}})
    assert resume.differences(base, other_params) == ["train.lr: None -> 0.005", "train.steps: 100 -> 200"]


def test_load_resumes_only_a_checkpoint_with_the_same_fingerprint(tmp_path) -> None:
    path = tmp_path / "checkpoints" / resume.CHECKPOINT
    fingerprint = _fingerprint(tmp_path)

    first = resume.load(path, fingerprint, steps=100)
    assert first.state is None and "no checkpoint" in first.message and str(path) in first.message

    logs = {"metrics.json": "{}\n", "plots/metrics/train/psnr.tsv": "step\tpsnr\n10\t12.5\n"}
    resume.save(path, _state(40), fingerprint, logs)
    again = resume.load(path, fingerprint, steps=100)
    assert again.state["step"] == 40 and torch.equal(again.state["weights"], torch.arange(4.0))
    assert again.logs == logs
    assert again.message == f"resuming from {path} at step 40 of 100"

    changed = dict(fingerprint, **{"train.steps": "200"})
    other = resume.load(path, changed, steps=200)
    assert other.state is None and other.logs == {}
    assert "train.steps: 100 -> 200" in other.message and "starting over" in other.message

    resume.save(path, _state(100), fingerprint, logs)
    done = resume.load(path, fingerprint, steps=100)
    assert done.state["step"] == 100 and "nothing left to train" in done.message


def test_a_checkpoint_that_spent_the_time_budget_leaves_nothing_to_train(tmp_path) -> None:
    path = tmp_path / resume.CHECKPOINT
    fingerprint = _fingerprint(tmp_path)
    resume.save(path, _state(40, seconds=12.5), fingerprint, {})
    going = resume.load(path, fingerprint, steps=100, seconds=30.0)
    assert going.message == f"resuming from {path} at step 40 of 100 (or 12.5 s of 30 s)"
    done = resume.load(path, fingerprint, steps=100, seconds=12.0)
    assert done.state["step"] == 40 and "12.5 s of training, the whole 12-s budget" in done.message
    assert "nothing left to train" in done.message


def test_an_unreadable_checkpoint_starts_over_and_says_so(tmp_path) -> None:
    path = tmp_path / resume.CHECKPOINT
    path.write_bytes(b"not a torch file")
    result = resume.load(path, _fingerprint(tmp_path), steps=10)
    assert result.state is None and "unreadable" in result.message and str(path) in result.message
    # Bytes torch.load reads as a pickle but not a checkpoint's: what it found, not torch's
    # advice to load with weights_only=False (running any code the file holds).
    path.write_bytes(b"garbage\n")
    result = resume.load(path, _fingerprint(tmp_path), steps=10)
    assert "UnpicklingError: not a checkpoint's contents (Unsupported operand" in result.message
    assert "weights_only" not in result.message


def test_a_checkpoint_cut_short_is_called_so_at_any_length(tmp_path) -> None:
    # A kill mid-copy, or a full disk, leaves a prefix of the file. torch.load then raises
    # EOFError (nothing left), miniz's 400-character RuntimeError or "OSError: [Errno 22]",
    # depending on where the cut falls; the message should say what happened to the file.
    whole = tmp_path / "whole.pt"
    resume.save(whole, {"step": 3, "weights": torch.arange(2000.0)}, {"device": "cpu"}, {"a.json": b"{}"})
    data, path = whole.read_bytes(), tmp_path / resume.CHECKPOINT
    messages = set()
    for length in [*range(0, len(data), 61), len(data) - 1]:
        path.write_bytes(data[:length])
        result = resume.load(path, {"device": "cpu"}, steps=10)
        assert result.state is None and str(path) in result.message
        said = result.message.partition("(")[2].rpartition(")")[0]
        expected = "the file is empty" if length == 0 else f"cut short or damaged, {length:,} bytes: "
        assert said.startswith(expected), said
        assert len(said) < 200 and "Errno" not in said, said
        messages.add(said.partition(": ")[2].partition(":")[0])
    assert {"RuntimeError", "OSError"} <= messages  # both ways torch.load fails on a prefix


def test_log_files_round_trip(tmp_path) -> None:
    source = tmp_path / "live"
    (source / "plots/metrics/val").mkdir(parents=True)
    (source / "metrics.json").write_text('{"step": 3}\n')
    (source / "plots/metrics/val/psnr.tsv").write_text("step\tpsnr\n3\t20.0\n")
    (source / "plots/images/val").mkdir(parents=True)
    png = bytes(range(256))  # not UTF-8: the validation images are binary
    (source / "plots/images/val/3.png").write_bytes(png)
    files = resume.snapshot_files(source)
    assert set(files) == {"metrics.json", "plots/metrics/val/psnr.tsv", "plots/images/val/3.png"}
    # Through a checkpoint file and back, as the train stage does.
    resume.save(tmp_path / resume.CHECKPOINT, {"step": 3, "seconds": 1.0}, _fingerprint(tmp_path), files)
    restored = resume.load(tmp_path / resume.CHECKPOINT, _fingerprint(tmp_path), steps=10)
    target = tmp_path / "restored"
    resume.restore_files(restored.logs, target)
    assert resume.snapshot_files(target) == files
    assert (target / "plots/images/val/3.png").read_bytes() == png


def test_the_code_entries_follow_each_modules_bytes_and_use(tmp_path, monkeypatch) -> None:
    package = tmp_path / "somepkg"
    package.mkdir()
    (package / "__init__.py").write_text("X = 1\n")
    (package / "part.py").write_text("Y = 2\n")
    (package / "kernel.py").write_text("Z = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import somepkg.part

    try:
        before = resume.code_digests("somepkg")
        assert sorted(before) == ["code of somepkg", "code of somepkg.part"]
        (package / "part.py").write_text("Y = 3\n")  # an edit, names unchanged
        edited = resume.code_digests("somepkg")
        assert resume.differences(before, edited) == ["code of somepkg.part changed"]
        # Another module coming into use (a kernel choice imports its kernels' module) is
        # said as such, not as an edit of the package's code.
        import somepkg.kernel  # noqa: F401

        assert resume.differences(edited, resume.code_digests("somepkg")) == [
            "somepkg.kernel: not in use -> in use"]
        assert resume.differences(resume.code_digests("somepkg"), edited) == [
            "somepkg.kernel: in use -> not in use"]
    finally:
        for name in ("somepkg", "somepkg.part", "somepkg.kernel"):
            sys.modules.pop(name, None)


def test_a_checkpoint_from_before_per_module_entries_says_the_code_changed(tmp_path) -> None:
    new = _fingerprint(tmp_path)
    old = {key: value for key, value in new.items() if not key.startswith(resume.CODE)}
    old["code of the nerf package"] = "0" * 64  # how checkpoints before session 22 named it
    said = resume.differences(old, new)
    assert "code of the nerf package changed" in said
    assert "nerf.resume: not in use -> in use" in said


def test_the_stage_script_is_part_of_the_fingerprint(tmp_path) -> None:
    script = tmp_path / "stages" / "train.py"
    script.parent.mkdir()
    script.write_text("SEED = 0\n")
    before = resume.fingerprint(PARAMS, [], CPU, script=script)
    assert len(before["code of stages/train.py"]) == 64
    script.write_text("SEED = 12345\n")
    after = resume.fingerprint(PARAMS, [], CPU, script=script)
    assert resume.differences(before, after) == ["code of stages/train.py changed"]
    # A checkpoint made before scripts were entered: the script may have changed since.
    older = {key: value for key, value in before.items() if "stages/" not in key}
    assert resume.differences(older, after) == ["code of stages/train.py changed"]


def test_a_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path) -> None:
    path = tmp_path / "last.pt"
    resume.save(path, _state(5), {"a": "1"}, {})
    before = path.read_bytes()
    with pytest.raises((AttributeError, pickle.PicklingError)):  # what pickling a lambda raises
        resume.save(path, {**_state(10), "unpicklable": lambda: None}, {"a": "1"}, {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_many_differences_show_the_first_five_and_count_the_rest(tmp_path) -> None:
    path = tmp_path / resume.CHECKPOINT
    old = {f"train.k{i}": "1" for i in range(7)}
    resume.save(path, _state(3), old, {})
    shown = "; ".join(f"train.k{i}: 1 -> 2" for i in range(5))
    seven = resume.load(path, {key: "2" for key in old}, steps=10)
    said = f"{path} was made with different inputs ({shown}"
    assert seven.message == f"{said}; and 2 more); starting over from step 0"
    five = resume.load(path, {**old, **{f"train.k{i}": "2" for i in range(5)}}, steps=10)
    assert five.message == f"{said}); starting over from step 0"


def test_a_checkpoint_that_spent_exactly_the_budget_leaves_nothing_to_train(tmp_path) -> None:
    # As training's own test: the budget is spent once the seconds reach it.
    path = tmp_path / resume.CHECKPOINT
    fingerprint = _fingerprint(tmp_path)
    resume.save(path, _state(40, seconds=30.0), fingerprint, {})
    done = resume.load(path, fingerprint, steps=100, seconds=30.0)
    assert done.state["step"] == 40 and "nothing left to train" in done.message


REPO = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from pathlib import Path; from nerf.resume import exclusive\n" \
       "with exclusive(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)\n"


def test_one_training_at_a_time_holds_the_checkpoints_folder(tmp_path) -> None:
    """Killing ``dvc repro`` leaves its stage training; the next ``dvc repro`` must not start
    a second one on the same checkpoint. The lock ends with its holder, even by SIGKILL."""
    folder = tmp_path / "checkpoints"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said = (rf"checkpoints is in use by another training \(pid {holder.pid}\); wait for it to end or "
                rf"stop it \(`kill {holder.pid}`")
        with pytest.raises(TrainingError, match=said), resume.exclusive(folder):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    with resume.exclusive(folder):  # released by the kill
        assert (folder / resume.LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(TrainingError, match=f"pid {os.getpid()}"), resume.exclusive(folder):
            pass  # this process's own lock, taken twice
    with resume.exclusive(folder):  # and at its end
        pass


def test_the_lock_file_holds_only_the_holders_pid(tmp_path) -> None:
    # An earlier holder's longer pid (or anything) is replaced, not overwritten in part.
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / resume.LOCK).write_text("1234567890123456789\n")
    with resume.exclusive(folder):
        assert (folder / resume.LOCK).read_text() == f"{os.getpid()}\n"
