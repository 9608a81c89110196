"""Atomic writes and digests."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import file_size_limit

from nerf.errors import DataError, run_stage
from nerf.io import _temp_prefix, atomic_dir, atomic_file, save_torch, sha256_file, write_json


def test_atomic_dir_replaces_on_success_and_keeps_the_old_on_failure(tmp_path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("stage failed")
    assert (target / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_refuses_to_replace_a_file_before_any_work(tmp_path) -> None:
    poses = tmp_path / "cams.json"
    poses.write_text("{}")
    with pytest.raises(DataError, match=r"cams\.json: is a file; expected a folder"), atomic_dir(poses):
        raise AssertionError("the body must not run")
    assert poses.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["cams.json"]


def test_atomic_dir_refuses_a_folder_holding_what_it_does_not_write(tmp_path) -> None:
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes.txt").write_text("important")
    with (pytest.raises(DataError, match=r"mine: holds notes, notes\.txt, which writing this folder would "
                                         r"delete; give a new or empty folder \(or one that holds only "
                                         r"depth, rgb\)$"),
          atomic_dir(mine, holds=("rgb", "depth"))):
        raise AssertionError("the body must not run")
    assert (mine / "notes.txt").read_text() == "important"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # A folder this writer filled before (or an empty one) is replaced as usual.
    for names in (["rgb", "depth"], ["rgb"]):
        with atomic_dir(tmp_path / "renders", holds=("rgb", "depth")) as tmp:
            for name in names:
                (tmp / name).mkdir()
        assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == sorted(names)


def test_atomic_dir_refuses_the_current_folder_and_those_above_it(tmp_path, monkeypatch) -> None:
    (tmp_path / "work" / "rgb").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    for out in (".", "..", str(tmp_path / "work"), "rgb/.."):
        with (pytest.raises(DataError, match=r"is the current folder or holds it; give a folder inside it$"),
              atomic_dir(out, holds=("rgb",))):
            raise AssertionError("the body must not run")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["rgb", "work"]
    with atomic_dir("rgb") as tmp:  # a folder inside it is fine
        (tmp / "a.png").write_bytes(b"png")
    assert (tmp_path / "work" / "rgb" / "a.png").read_bytes() == b"png"


def test_atomic_dir_puts_the_old_folder_back_when_the_swap_fails(tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("one")
    with pytest.raises(DataError, match=r"out: cannot write it"), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("two")
        shutil.rmtree(tmp)  # the new folder vanishes before the swap
    assert (target / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_file_replaces_on_success_and_keeps_the_old_on_failure(tmp_path) -> None:
    target = tmp_path / "metrics.json"
    with atomic_file(target) as tmp:
        tmp.write_text("one")
        assert not target.exists()
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("tw")
        raise RuntimeError("stage failed half-way")
    assert target.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # the temporary is gone


def test_nested_atomic_files_keep_every_old_file_when_one_cannot_be_renamed(tmp_path) -> None:
    first, second, third = tmp_path / "a.json", tmp_path / "b.csv", tmp_path / "c.png"
    first.write_text("old a")
    second.write_text("old b")
    third.mkdir()  # a folder where the third file goes: its rename, the first one done, fails
    (third / "keep").write_text("x")
    with (pytest.raises(DataError, match=r"c\.png: cannot write it \(Is a directory\)"),
          atomic_file(first) as a, atomic_file(second) as b, atomic_file(third) as c):
        a.write_text("new a")
        b.write_text("new b")
        c.write_text("new c")
    assert first.read_text() == "old a" and second.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.csv", "c.png"]


def test_a_write_that_fails_names_the_output_not_its_temporary(tmp_path) -> None:
    blocker = tmp_path / "metrics"
    blocker.write_text("a file where a folder goes")
    with (pytest.raises(DataError, match=r"^\S*metrics/eval\.json: cannot write it \(File exists\)"),
          atomic_file(blocker / "eval.json") as tmp):
        raise AssertionError(f"the body must not run ({tmp})")
    with (pytest.raises(DataError, match=r"^\S*metrics/renders: cannot write it"),
          atomic_dir(blocker / "renders") as tmp):
        raise AssertionError(f"the body must not run ({tmp})")
    with (pytest.raises(DataError, match=r"^\S*out\.bin: cannot write it \(No space left on device\)"),
          atomic_file(tmp_path / "out.bin") as tmp):
        raise OSError(28, "No space left on device", str(tmp))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics"]


def test_a_file_too_large_to_write_keeps_the_old_and_names_the_output(tmp_path) -> None:
    model = tmp_path / "models" / "model.pt"
    save_torch(model, {"weights": torch.zeros(10)})
    old = model.read_bytes()
    with (file_size_limit(1 << 16),
          pytest.raises(DataError, match=r"^\S*models/model\.pt: cannot write it \(File too large\)$")):
        save_torch(model, {"weights": torch.zeros(100_000)})  # 400 kB
    assert model.read_bytes() == old and os.listdir(model.parent) == ["model.pt"]

    # Inside a folder written atomically: a file object's write names no file, a library's
    # copy names its temporary target; either way the error names the output.
    renders = tmp_path / "renders"
    renders.mkdir()
    (renders / "a.png").write_bytes(b"old")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(1 << 17))
    full = r"cannot write it \(File too large\)$"
    with (file_size_limit(1 << 16), pytest.raises(DataError, match=rf"^\S*/renders: {full}"),
          atomic_dir(renders) as tmp, open(tmp / "a.png", "wb") as f):
        f.write(bytes(1 << 17))
    with (file_size_limit(1 << 16), pytest.raises(DataError, match=rf"^\S*/renders/sub/big\.bin: {full}"),
          atomic_dir(renders) as tmp):
        (tmp / "sub").mkdir()
        shutil.copyfile(big, tmp / "sub" / "big.bin")
    # Our own errors naming a file inside the temporary folder name the output's path too.
    with (pytest.raises(DataError, match=r"^\S*/renders/x\.png/y: cannot write it \(File exists\)$"),
          atomic_dir(renders) as tmp):
        (tmp / "x.png").write_bytes(b"a file where a folder goes")
        with atomic_file(tmp / "x.png" / "y"):
            pass
    assert os.listdir(renders) == ["a.png"] and (renders / "a.png").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["big.bin", "models", "renders"]


def test_a_stage_reports_an_os_error_in_one_line(capsys) -> None:
    def main() -> None:
        raise PermissionError(13, "Permission denied", "data/split/train.npz")

    with pytest.raises(SystemExit) as stop:
        run_stage(main)
    assert stop.value.code == 1
    assert capsys.readouterr().err == "error: data/split/train.npz: Permission denied\n"


def test_a_stage_out_of_memory_says_so_in_one_line_and_a_bug_keeps_its_traceback(capsys) -> None:
    import torch

    def main() -> None:
        torch.empty(2**50, dtype=torch.uint8)  # a pebibyte: more than any address space here

    with pytest.raises(SystemExit) as stop:
        run_stage(main)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (") and "can't allocate memory" in err
    assert err.count("\n") == 1 and err.endswith("render.chunk or model, or a machine with more memory\n")

    def bug() -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_stage(bug)


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated")])
def test_a_stopped_stage_says_so_and_removes_what_it_half_wrote(tmp_path, sig, code, said) -> None:
    """Ctrl-C, and SIGTERM (kill, docker stop, a scheduler's time limit), mid-write: one line, the
    earlier output intact, no temporary folder left behind."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("earlier")
    script = f"""
import sys, time
from nerf.errors import run_stage
from nerf.io import atomic_dir
def main():
    with atomic_dir({str(out)!r}) as tmp:
        (tmp / "a").write_text("half")
        print("writing", flush=True)
        time.sleep(60)
run_stage(main)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (code, f"error: {said}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "a").read_text() == "earlier"


def test_temporaries_of_killed_processes_are_removed_on_the_next_write(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale_dir = tmp_path / f".out.tmp-{dead_pid}-abc"
    stale_dir.mkdir()
    stale_file = tmp_path / f".model.pt.tmp-{dead_pid}-xyz.pt"
    stale_file.write_bytes(b"half")
    ours = tmp_path / f".out.tmp-{os.getpid()}-live"  # a running process's: kept
    ours.mkdir()
    other = tmp_path / ".outer.tmp-1-x"  # another output's: not touched
    other.mkdir()

    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("x")
    with atomic_file(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"whole")
    assert not stale_dir.exists() and not stale_file.exists()
    assert ours.exists() and other.exists()
    assert (tmp_path / "model.pt").read_bytes() == b"whole"


def test_a_temporary_of_another_users_running_process_is_kept(tmp_path) -> None:
    """Signalling another user's process is refused (PermissionError), and that process is
    alive: its temporary must survive the clean-up before our next write, while a dead
    process's goes. PID 1 (init) is root's; as root, the clean-up runs in a child that has
    become the unprivileged user 65534."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".model.pt.tmp-{int(dead.stdout)}-xyz.pt"
    theirs = tmp_path / ".model.pt.tmp-1-theirs.pt"
    for path in (stale, theirs):
        path.write_bytes(b"half")
    if os.geteuid() != 0:
        _temp_prefix(tmp_path / "model.pt")
    else:
        tmp_path.chmod(0o777)
        with warnings.catch_warnings():  # fork in a threaded process: the child only removes files
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.chdir(tmp_path)  # and a relative path: 65534 cannot enter root's folders above
                os.setgid(65534)
                os.setuid(65534)
                _temp_prefix(Path("model.pt"))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert not stale.exists()
    assert theirs.read_bytes() == b"half"


def test_sha256_file_matches_hashlib(tmp_path) -> None:
    data = os.urandom(3 * 1024 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path, chunk=1024) == hashlib.sha256(data).hexdigest()


def test_save_torch_writes_the_same_bytes_for_the_same_contents(tmp_path) -> None:
    obj = {"weights": torch.arange(12.0).reshape(3, 4), "step": 7}
    save_torch(tmp_path / "a.pt", obj)
    first = (tmp_path / "a.pt").read_bytes()
    save_torch(tmp_path / "a.pt", obj)  # again, through another temporary file
    assert (tmp_path / "a.pt").read_bytes() == first
    save_torch(tmp_path / "b.pt", obj)  # and under another name
    assert (tmp_path / "b.pt").read_bytes() == first
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["weights"], obj["weights"])
    # The comparison can fail: other contents give other bytes.
    save_torch(tmp_path / "c.pt", {**obj, "step": 8})
    assert (tmp_path / "c.pt").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "c.pt"]


def test_an_output_a_kill_left_set_aside_is_put_back(tmp_path) -> None:
    # Killed between atomic_dir's two renames: the old output waits as .out.old-<pid>.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    aside = tmp_path / f".out.old-{int(dead.stdout)}"
    aside.mkdir()
    (aside / "a.txt").write_text("previous")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out"):
        raise RuntimeError("this run fails too")
    assert (tmp_path / "out/a.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_get_the_modes_of_ordinary_files_and_folders(tmp_path, mask) -> None:
    # The temporaries are created owner-only; the outputs must end up as open() and mkdir()
    # would have made them under the umask (other users and DVC's cache read them).
    old = os.umask(mask)
    try:
        with atomic_file(tmp_path / "model.pt") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "renders") as tmp:
            (tmp / "a.png").write_bytes(b"y")
    finally:
        os.umask(old)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "renders").stat().st_mode & 0o777 == 0o777 & ~mask


def test_replacing_a_folder_leaves_nothing_of_the_old_one_beside_it(tmp_path) -> None:
    for text in ("one", "two"):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text(text)
    assert (tmp_path / "out" / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_holding_many_foreign_entries_names_three_and_counts_the_rest(tmp_path) -> None:
    for name in "abcde":
        (tmp_path / "out" / name).mkdir(parents=True)
    with (pytest.raises(DataError, match=r"out: holds a, b, c and 2 more, which writing this folder"),
          atomic_dir(tmp_path / "out", holds=("rgb",))):
        raise AssertionError("the body must not run")


def test_an_os_error_that_is_not_a_write_keeps_its_own_message(tmp_path) -> None:
    # A dropped connection while downloading into the folder is not a failure to write it.
    with pytest.raises(ConnectionResetError, match="Connection reset by peer"), atomic_dir(tmp_path / "raw"):
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_a_process_killed_mid_write_are_removed_on_the_next_write(tmp_path) -> None:
    # SIGKILL runs no clean-up: what the killed process left must be recognisable as its.
    script = f"""
import time
from nerf.io import atomic_dir, atomic_file
with atomic_dir({str(tmp_path / "out")!r}) as folder, atomic_file({str(tmp_path / "model.pt")!r}) as tmp:
    (folder / "a").write_text("half")
    tmp.write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline() == "writing\n"
    proc.kill()
    proc.communicate(timeout=30)
    assert len(list(tmp_path.iterdir())) == 2  # the two temporaries
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("whole")
    save_torch(tmp_path / "model.pt", {"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "out"]


def test_a_sibling_that_only_looks_like_a_temporary_is_left_alone(tmp_path) -> None:
    notes = tmp_path / ".model.pt.tmp-notes"  # no process id: no process's temporary
    notes.write_text("keep")
    save_torch(tmp_path / "model.pt", {"step": 1})
    assert notes.read_text() == "keep"


def test_write_json_keeps_the_key_order_and_ends_with_a_newline(tmp_path) -> None:
    write_json(tmp_path / "metrics.json", {"psnr": 20.5, "lpips": None})
    assert (tmp_path / "metrics.json").read_text() == '{\n  "psnr": 20.5,\n  "lpips": null\n}\n'


def test_a_stage_out_of_memory_in_numpy_or_on_a_gpu_says_so_in_one_line(capsys) -> None:
    import numpy as np

    def numpy_main() -> None:
        np.empty(2**50, dtype=np.uint8)  # a pebibyte: numpy's MemoryError

    def cuda_main() -> None:  # what torch raises when a GPU's memory runs out
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    for main, said in ((numpy_main, "Unable to allocate"), (cuda_main, "CUDA out of memory")):
        with pytest.raises(SystemExit) as stop:
            run_stage(main)
        err = capsys.readouterr().err
        assert stop.value.code == 1 and err.count("\n") == 1
        assert err.startswith(f"error: out of memory ({said}")


def test_a_stage_puts_back_the_sigterm_handler_it_found() -> None:
    def fail() -> None:
        raise DataError("bad input")

    before = signal.getsignal(signal.SIGTERM)
    run_stage(lambda: None)
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(SystemExit):
        run_stage(fail)
    assert signal.getsignal(signal.SIGTERM) == before
