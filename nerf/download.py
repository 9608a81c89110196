"""The download stage: fetch ``data.source``, validate it fully, write a normalised copy.

``data/raw`` ends up holding either ``scene.npz`` or a Blender folder's files
(transforms_*.json and the images they name, same relative paths), plus ``source.json``.
It is written through :func:`atomic_dir`, so any failure leaves the old folder as it was.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nerf.config import DataConfig
from nerf.errors import ConfigError, DataError
from nerf.io import atomic_dir, sha256_file, write_json
from nerf.scene import (
    BLENDER_SUBSETS,
    RAW_INFO,
    RAW_NPZ,
    blender_files,
    detect_format,
    is_npz,
    load_scene,
)

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "tiny_lego.npz"
_CHUNK = 1 << 20


def is_url(source: str) -> bool:
    try:
        return urllib.parse.urlparse(source).scheme in ("http", "https")
    except ValueError as err:  # e.g. "http://[::1": an unclosed IPv6 host
        raise ConfigError(f"data.source {source!r} is not a valid URL ({err})") from None


def local_path(source: str) -> Path:
    """The file or folder a local ``data.source`` names: the embedded sample for ``sample``,
    else the path, ``~`` expanded (DVC passes params.yaml's text on as it is)."""
    return SAMPLE if source == "sample" else Path(source).expanduser()


def fetch(url: str, folder: str | Path, sha256: str, timeout: float = 30.0) -> Path:
    """Streams ``url`` into ``folder``; the file appears only once complete with ``sha256``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).name.strip(".") or "download"
    part = folder / f".{name}.part"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
            if total is not None and received < total:  # read(n) ends short instead of raising
                raise ConnectionError(f"the connection closed after {received} of {total} bytes")
    except urllib.error.HTTPError as err:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: download failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise DataError(f"{url}: download failed: {reason}") from None
    if digest.hexdigest() != sha256.lower():
        part.unlink()
        raise DataError(
            f"{url}: checksum mismatch: data.sha256 is {sha256.lower()}, "
            f"the downloaded file has {digest.hexdigest()}"
        )
    path = folder / name
    part.replace(path)
    return path


def _extract(archive: Path, folder: Path, label: str) -> Path:
    """Extracts a zip archive; returns the single folder in it that holds transforms_*.json."""
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{label}: cannot extract the zip archive ({err})") from None
    names = {f"transforms_{s}.json" for s in BLENDER_SUBSETS}
    found = sorted({p.parent for p in folder.rglob("transforms_*.json") if p.name in names})
    if len(found) != 1:
        where = ", ".join(str(p.relative_to(folder)) for p in found) if found else "none"
        raise DataError(
            f"{label}: expected exactly one folder with transforms_*.json in the archive, "
            f"found {len(found)} ({where})"
        )
    return found[0]


def download(config: DataConfig, out: str | Path) -> dict[str, Any]:
    """Fetches and validates ``config.source`` into ``out``; returns what ``source.json`` holds."""
    source = config.source
    # A folder a download wrote (its source.json) holds some scene's files, to be replaced;
    # any other must be new or empty: a mistyped --out must not delete the user's files.
    with atomic_dir(out, holds=None if (Path(out) / RAW_INFO).is_file() else ()) as tmp:
        scratch = tmp / ".fetch"
        if is_url(source):
            if config.sha256 is None:
                raise ConfigError(f"data.sha256 is required when data.source is a URL ({source})")
            path, label = fetch(source, scratch, config.sha256), source
        else:
            scheme = source.partition("://")[0]
            if "://" in source and scheme.isalpha():
                raise ConfigError(f"data.source {source!r}: only http:// and https:// URLs are fetched, "
                                  f"not {scheme}://; or give a local path")
            path, label = local_path(source), source
            if not path.exists():
                hint = f"paths are relative to {Path.cwd()}"
                if ".dvc/tmp/exps/" in Path.cwd().as_posix():
                    hint += ("; a queued experiment runs in a copy of the repository there, so give "
                             "data.source as an absolute path")
                raise DataError(f"{path}: data.source not found ({hint})")
        if config.sha256 and path.is_dir():
            raise ConfigError(f"data.sha256 is set, but data.source {label} is a folder, which has no "
                              "single checksum; set data.sha256 to null")
        digest = sha256_file(path) if path.is_file() else None
        if digest and config.sha256 and digest != config.sha256.lower():
            raise DataError(
                f"{label}: checksum mismatch: data.sha256 is {config.sha256.lower()}, "
                f"the file has {digest}"
            )
        archive = path.is_file() and zipfile.is_zipfile(path) and not is_npz(path)
        if archive and config.format == "npz":
            raise DataError(f"{label}: data.format is npz, but this is a zip archive without .npy arrays "
                            "(a Blender folder's?); use auto, or blender")
        if archive:
            path = _extract(path, scratch / "extracted", label)
        try:
            fmt = detect_format(path, config.format)
            scene = load_scene(path, fmt)
        except DataError as err:  # a download's or archive's errors name it, not the scratch folder
            if scratch in path.parents:
                raise DataError(str(err).replace(str(path), label)) from None
            raise
        if fmt == "npz":
            shutil.copyfile(path, tmp / RAW_NPZ)
        else:
            for rel in blender_files(path):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path / rel, tmp / rel)
        shutil.rmtree(scratch, ignore_errors=True)
        info = {
            "source": source, "format": fmt, "sha256": digest, "views": scene.n_views,
            "width": int(scene.images.shape[2]), "height": int(scene.images.shape[1]),
        }
        write_json(tmp / RAW_INFO, info)
    return info
