"""The download stage: sample, local files and folders, URLs, and bad input."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_script, shared_path, write_npz, write_params

from nerf.config import DataConfig
from nerf.download import download, fetch
from nerf.errors import ConfigError, DataError
from nerf.scene import load_raw, load_scene


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def old_raw(tmp_path) -> Path:
    """An existing data/raw (an earlier download's: its source.json) that failed downloads must
    leave alone."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "source.json").write_text("old")
    return raw


def assert_untouched(raw: Path) -> None:
    assert sorted(p.name for p in raw.iterdir()) == ["source.json"]
    assert (raw / "source.json").read_text() == "old"
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw"]  # no temporary leftovers


def test_sample(tmp_path):
    info = download(DataConfig(), tmp_path / "raw")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["scene.npz", "source.json"]
    assert json.loads((tmp_path / "raw" / "source.json").read_text()) == info
    assert info["source"] == "sample" and info["format"] == "npz" and info["views"] == 80
    assert info["sha256"] == sha256(REPO / "assets" / "tiny_lego.npz")
    assert load_raw(tmp_path / "raw").images.shape == (80, 100, 100, 3)


def test_local_npz_replaces_old(old_raw):
    source = shared_path("tiny_lego.npz")
    info = download(DataConfig(source=str(source), sha256=sha256(source)), old_raw)
    assert sorted(p.name for p in old_raw.iterdir()) == ["scene.npz", "source.json"]
    assert json.loads((old_raw / "source.json").read_text()) == info
    assert (old_raw / "scene.npz").read_bytes() == source.read_bytes()
    assert info["sha256"] == sha256(source) and info["views"] == 80


def test_a_folder_of_the_users_own_is_not_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("important")
    with pytest.raises(DataError, match=r"mine: holds notes\.txt, which writing this folder would delete"):
        download(DataConfig(), mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    download(DataConfig(), tmp_path / "empty")  # a new folder, and an earlier download's, are fine
    download(DataConfig(), tmp_path / "empty")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["scene.npz", "source.json"]


def test_local_blender_folder(tmp_path, make_blender, monkeypatch):
    make_blender(tmp_path / "lego")
    (tmp_path / "lego" / "train" / "r_0_depth.png").write_bytes(b"not referenced")
    monkeypatch.chdir(tmp_path)  # a relative source path is relative to the working folder
    info = download(DataConfig(source="lego"), tmp_path / "raw")
    files = sorted(str(p.relative_to(tmp_path / "raw")) for p in (tmp_path / "raw").rglob("*.*"))
    assert files == ["source.json", "test/r_2.png", "train/r_0.png", "train/r_1.png",
                     "transforms_test.json", "transforms_train.json"]
    assert info == {"source": "lego", "format": "blender", "sha256": None, "views": 3,
                    "width": 40, "height": 40}
    scene = load_raw(tmp_path / "raw")
    np.testing.assert_array_equal(scene.images, load_scene(tmp_path / "lego").images)
    assert scene.subsets == ("train", "train", "test")


def test_a_source_under_the_home_folder_may_start_with_a_tilde(tmp_path, make_blender, monkeypatch):
    make_blender(tmp_path / "home" / "lego")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    info = download(DataConfig(source="~/lego"), tmp_path / "raw")
    assert info["source"] == "~/lego" and info["views"] == 3
    with pytest.raises(DataError, match=rf"^{tmp_path}/home/gone: data\.source not found"):
        download(DataConfig(source="~/gone"), tmp_path / "raw")


def test_url_npz(http_server, tmp_path):
    www, base = http_server
    source = write_npz(www / "tiny.npz")  # 4 views of 6x8
    # A checksum pasted in capitals is the same checksum.
    info = download(DataConfig(source=f"{base}/tiny.npz", sha256=sha256(source).upper()), tmp_path / "raw")
    assert info["sha256"] == sha256(source) and info["views"] == 4
    assert (info["width"], info["height"]) == (8, 6)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["scene.npz", "source.json"]
    assert (tmp_path / "raw" / "scene.npz").read_bytes() == source.read_bytes()


def test_url_zip_archive(http_server, tmp_path, make_blender):
    www, base = http_server
    folder = make_blender(tmp_path / "lego", {"train": [0, 1]})
    archive = www / "lego.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            zf.write(path, Path("nerf_synthetic") / path.relative_to(tmp_path))
    info = download(DataConfig(source=f"{base}/lego.zip", sha256=sha256(archive)), tmp_path / "raw")
    assert info["format"] == "blender" and info["views"] == 2
    assert (tmp_path / "raw" / "transforms_train.json").is_file()
    assert not (tmp_path / "raw" / ".fetch").exists()
    assert load_raw(tmp_path / "raw").names == ("train/r_0", "train/r_1")


def test_url_zip_with_two_scenes(http_server, old_raw, make_blender):
    www, base = http_server
    archive = www / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for scene in ("a", "b"):
            zf.writestr(f"{scene}/transforms_train.json", "{}")
    with pytest.raises(DataError, match=r"exactly one folder .* found 2 \(a, b\)"):
        download(DataConfig(source=f"{base}/two.zip", sha256=sha256(archive)), old_raw)
    assert_untouched(old_raw)


def test_a_zip_of_a_blender_folder_given_as_npz_says_so(tmp_path, old_raw, make_blender):
    folder = make_blender(tmp_path / "lego", {"train": [0, 1]})
    archive = tmp_path / "lego.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            zf.write(path, path.relative_to(tmp_path))
    with pytest.raises(DataError, match=r"lego\.zip: data\.format is npz, but this is a zip archive without "
                                        r"\.npy arrays .*; use auto, or blender"):
        download(DataConfig(source=str(archive), format="npz"), old_raw)
    assert_untouched(old_raw)
    assert download(DataConfig(source=str(archive), format="blender"), old_raw)["views"] == 2


def test_url_checksum_mismatch(http_server, old_raw):
    www, base = http_server
    source = write_npz(www / "tiny.npz")
    url = f"{base}/tiny.npz"
    with pytest.raises(DataError) as err:
        download(DataConfig(source=url, sha256="0" * 64), old_raw)
    message = str(err.value)
    assert url in message and "0" * 64 in message and sha256(source) in message
    assert_untouched(old_raw)


def test_a_downloaded_file_that_is_not_a_scene_is_named_by_its_url(http_server, old_raw):
    www, base = http_server
    source = www / "short.npz"
    source.write_bytes(write_npz(www / "tiny.npz").read_bytes()[:100])  # truncated
    url = f"{base}/short.npz"
    with pytest.raises(DataError) as err:
        download(DataConfig(source=url, sha256=sha256(source)), old_raw)
    assert str(err.value).startswith(f"{url}: ") and ".fetch" not in str(err.value)
    assert_untouched(old_raw)


def test_a_malformed_url_names_data_source(old_raw):
    with pytest.raises(ConfigError, match=r"data.source 'http://\[::1' is not a valid URL"):
        download(DataConfig(source="http://[::1", sha256="0" * 64), old_raw)
    assert_untouched(old_raw)


def test_fetch_checks_before_renaming(http_server, tmp_path):
    www, base = http_server
    source = write_npz(www / "tiny.npz")
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(f"{base}/tiny.npz", tmp_path / "dl", "0" * 64)
    assert list((tmp_path / "dl").iterdir()) == []
    path = fetch(f"{base}/tiny.npz", tmp_path / "dl", sha256(source))
    assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["tiny.npz"]


def test_url_unreachable(old_raw):
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tiny.npz"
    with pytest.raises(DataError, match=f"{url}: download failed: .*refused"):
        download(DataConfig(source=url, sha256="0" * 64), old_raw)
    assert_untouched(old_raw)


@pytest.mark.parametrize(("then", "error"), [("stall", "timed out"),
                                             ("close", "the connection closed after 10 of 1000 bytes")])
def test_a_download_cut_off_mid_file_is_a_clear_error(tmp_path, then, error):
    # A real server on 127.0.0.1 that promises 1000 bytes, sends 10, then stalls or hangs up.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    release = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            if then == "stall":
                release.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/scene.npz"
    try:
        with pytest.raises(DataError, match=f"{url}: download failed: .*{error}"):
            fetch(url, tmp_path / "dl", "0" * 64, timeout=0.5)
    finally:
        release.set()
        thread.join(5)
        server.close()
    assert list((tmp_path / "dl").iterdir()) == []  # the partial file is gone


def test_url_404(http_server, old_raw):
    url = f"{http_server[1]}/missing.npz"
    with pytest.raises(DataError, match=f"{url}: download failed: HTTP 404"):
        download(DataConfig(source=url, sha256="0" * 64), old_raw)
    assert_untouched(old_raw)


def test_url_needs_sha256(old_raw):
    with pytest.raises(ConfigError, match="data.sha256 is required"):
        download(DataConfig(source="https://example.com/tiny.npz"), old_raw)
    assert_untouched(old_raw)


BAD_NPZ = {  # name: (npz arrays, expected message)
    "missing_key": ({"poses": None}, r"bad\.npz: missing key poses"),
    "count_mismatch": (
        {"poses": np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))},
        r"bad\.npz: 4 images but 3 poses",
    ),
    "nonfinite_poses": (
        {"poses": np.full((4, 4, 4), np.nan, np.float32)}, r"bad\.npz: poses: expected finite"
    ),
    "nonfinite_pixels": (
        {"images": np.where(np.arange(3) == 1, np.nan, np.full((4, 6, 8, 3), 0.5, np.float32))},
        r"bad\.npz: images: pixel values must be finite",
    ),
    "wrong_shape": (
        {"images": np.zeros((4, 6, 8), np.float32)}, r"bad\.npz: images: expected shape \(n, h, w"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz(case, tmp_path, old_raw):
    arrays, expected = BAD_NPZ[case]
    bad = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=expected):
        download(DataConfig(source=str(bad)), old_raw)
    assert_untouched(old_raw)


@pytest.mark.parametrize("case", ["png_missing", "malformed_json", "no_camera_angle"])
def test_bad_blender(case, tmp_path, old_raw, make_blender):
    folder = make_blender(tmp_path / "lego")
    transforms = folder / "transforms_train.json"
    if case == "png_missing":
        (folder / "train" / "r_1.png").unlink()
        expected = r"train/r_1\.png \(frame of transforms_train\.json\): image file not found"
    elif case == "malformed_json":
        transforms.write_text(transforms.read_text()[:-5])
        expected = r"transforms_train\.json: malformed JSON"
    else:
        transforms.write_text(json.dumps({"frames": []}))
        expected = r"transforms_train\.json: missing camera_angle_x"
    with pytest.raises(DataError, match=expected):
        download(DataConfig(source=str(folder)), old_raw)
    assert_untouched(old_raw)


def test_missing_source(tmp_path, old_raw):
    with pytest.raises(DataError, match=r"nowhere\.npz: data\.source not found"):
        download(DataConfig(source=str(tmp_path / "nowhere.npz")), old_raw)
    assert_untouched(old_raw)


def test_a_relative_source_in_a_queued_experiment_says_to_give_an_absolute_path(tmp_path, monkeypatch):
    # `dvc queue start` runs each experiment in a copy of the repository under .dvc/tmp/exps/.
    workspace = tmp_path / "repo/.dvc/tmp/exps/tmpabc"
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    with pytest.raises(DataError, match=r"data\.source not found .*give data\.source as an absolute path"):
        download(DataConfig(source="../shared/lego.npz"), workspace / "data/raw")


def test_other_url_schemes_and_folder_checksums_are_refused(tmp_path, old_raw, make_blender):
    with pytest.raises(ConfigError, match=r"only http:// and https:// URLs are fetched, not ftp://"):
        download(DataConfig(source="ftp://example.org/lego.npz"), old_raw)
    folder = make_blender(tmp_path / "lego")
    with pytest.raises(ConfigError, match=r"data.sha256 is set, but data.source .*lego is a folder"):
        download(DataConfig(source=str(folder), sha256="0" * 64), old_raw)
    assert_untouched(old_raw)


def test_local_checksum_in_capitals_matches(tmp_path):
    source = shared_path("tiny_lego.npz")
    info = download(DataConfig(source=str(source), sha256=sha256(source).upper()), tmp_path / "raw")
    assert info["sha256"] == sha256(source)


def test_local_checksum_mismatch(old_raw):
    with pytest.raises(DataError, match="sample: checksum mismatch"):
        download(DataConfig(sha256="0" * 64), old_raw)
    assert_untouched(old_raw)


@pytest.mark.parametrize("case", ["missing_key", "png_missing"])
def test_stage_script_fails_cleanly(case, tmp_path, old_raw, make_blender):
    if case == "missing_key":
        write_npz(tmp_path / "bad.npz", focal=None)
        source, expected = "bad.npz", "bad.npz: missing key focal"
    else:
        (make_blender(tmp_path / "lego") / "train" / "r_1.png").unlink()
        source, expected = "lego", "lego/train/r_1.png"
    write_params(tmp_path, data={"source": source})
    result = run_script("download.py", "--out", "data/raw", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert result.stdout == ""
    assert_untouched(old_raw)


def test_stage_script_success(tmp_path):
    write_params(tmp_path)
    result = run_script("download.py", "--out", "data/raw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "80 views" in result.stdout and (tmp_path / "data" / "raw" / "scene.npz").is_file()


def test_a_truncated_npz_is_called_unreadable_not_an_unknown_format(tmp_path, old_raw):
    whole = write_npz(tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.npz: not a readable \.npz file: expected a zip of \.npy "
                                        r"arrays, as np\.savez writes \(is it truncated\?\)"):
        download(DataConfig(source=str(tmp_path / "cut.npz")), old_raw)
    assert_untouched(old_raw)


def test_a_local_source_is_named_as_given(tmp_path, old_raw, make_blender, monkeypatch):
    # "./a" is the path "a": a search-and-replace of "a" by "./a" in the message once turned
    # "transforms_train.json" into "tr./ansforms_tr./ain.json".
    monkeypatch.chdir(tmp_path)
    folder = make_blender(tmp_path / "a")
    for name in ("train", "test"):
        (folder / f"transforms_{name}.json").unlink()
    with pytest.raises(DataError, match=r"^a: no transforms_train\.json, transforms_val\.json or "
                                        r"transforms_test\.json; expected a Blender synthetic folder"):
        download(DataConfig(source="./a"), old_raw)
    assert_untouched(old_raw)
