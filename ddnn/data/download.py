"""Download and unpack the canonical CIFAR tarballs, verifying their published checksums."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ddnn.data.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """A dataset tarball: where it lives, its MD5 (as published) and the folder it unpacks to."""

    url: str
    md5: str
    folder: str


ARCHIVES = {
    "cifar10": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
    ),
    "cifar100": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
    ),
}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_cifar(name: str, dest: str | Path, url: str | None = None, md5: str | None = None,
                   progress: bool = True) -> Path:
    """Fetch ``cifar10`` or ``cifar100`` into ``dest`` and return the unpacked folder.

    ``url``/``md5`` override the canonical ones (a mirror, or a ``file://`` URL). An existing
    archive with the right checksum is not fetched again. A checksum mismatch deletes the
    download and raises DatasetError.
    """
    if name not in ARCHIVES:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(ARCHIVES)}")
    archive = ARCHIVES[name]
    url = url or archive.url
    md5 = md5 or archive.md5
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tarball = dest / Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1])).name
    if not (tarball.is_file() and _md5(tarball) == md5):
        log.info("downloading %s to %s", url, tarball)
        part = tarball.with_suffix(tarball.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=tarball.name,
                          disable=not progress) as bar:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise DatasetError(url, f"download failed ({exc})") from None
        got = _md5(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise DatasetError(url, f"checksum mismatch: md5 {got}, expected {md5}")
        shutil.move(part, tarball)
    target = dest / archive.folder
    if not target.is_dir():
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    if not target.is_dir():
        raise DatasetError(tarball, f"archive did not contain {archive.folder}/")
    return target
