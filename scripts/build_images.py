"""Build ddnn's container images with no registry and no network inside a build: ``make images``.

1. **base**: the public base the Dockerfiles name (``BASE_IMAGE``) when the engine has it or can pull
   it; otherwise a local Debian bookworm made with ``debootstrap`` (Debian's packages: Python 3.11,
   its venv module, ``libpython3.11`` for Triton's Python-backend stub, CA certificates) and
   ``docker import``-ed as ``ddnn-base:bookworm-<recipe hash>``.
2. **wheels**: a wheelhouse per ``deploy/docker/requirements/<name>.txt``, downloaded on the host by pip
   (``--require-hashes --no-deps``, manylinux x86_64 / CPython 3.11 wheels only) and cached under
   ``.cache/images/wheelhouse/<name>-<file hash>``; packed into ``ddnn-wheels:<hash of every file>``,
   an image holding ``/wheels/<name>/``, which the Dockerfiles copy from. The images install exactly
   those files, with ``--no-index``.
3. **images**: ``ddnn-{edge,cloud,loadgen}:<version>`` from ``deploy/docker/*.Dockerfile`` and, for CI,
   ``ddnn-prometheus:<version>`` from Debian's ``prometheus`` package (``apt-get download`` on the
   host, unpacked inside the build). Docker's layer cache skips what did not change.

Every step is skipped when its output exists (keyed by content hashes). Stdlib only: runs with the
host's ``python3`` before any venv exists. ``python3 scripts/build_images.py --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "deploy" / "docker"
REQUIREMENTS = DOCKER_DIR / "requirements"
CACHE = REPO / ".cache" / "images"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# image -> Dockerfile; each Dockerfile names its own requirement file.
SERVICE_IMAGES = {"edge": "edge.Dockerfile", "cloud": "cloud.Dockerfile", "loadgen": "loadgen.Dockerfile"}
SUITE = "bookworm"
MIRROR = os.environ.get("DDNN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ["python3", "python3-venv", "libpython3.11", "ca-certificates"]
# pip download's target: CPython 3.11 on x86_64 glibc >= 2.36 (bookworm); pip needs every tag spelled out.
PLATFORMS = [*(f"manylinux_2_{m}_x86_64" for m in range(36, 4, -1)), "manylinux2014_x86_64", "manylinux2010_x86_64",
             "manylinux1_x86_64", "linux_x86_64"]


def log(msg: str) -> None:
    print(f"[images] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def sha12(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:12]


def dockerfile_default(dockerfile: Path, arg: str) -> str:
    match = re.search(rf"^ARG {arg}=(\S+)", dockerfile.read_text(), re.M)
    if not match:
        raise SystemExit(f"{dockerfile.name}: no default for ARG {arg}")
    return match.group(1)


def local_base() -> str:
    """ddnn-base:bookworm-<hash>: debootstrap (minbase) + Python, imported into the engine."""
    tag = f"ddnn-base:{SUITE}-{sha12(json.dumps([SUITE, MIRROR, BASE_PACKAGES]).encode())}"
    if image_exists(tag):
        log(f"base {tag}: exists")
        return tag
    if shutil.which("debootstrap") is None:
        raise SystemExit("make images: no base image can be pulled and debootstrap is missing: "
                         "apt-get install debootstrap (.ci/run does), or pass BASE_IMAGE=<an image you have>")
    # Outside the checkout (debootstrap mounts /proc in it while it works), removed afterwards.
    with tempfile.TemporaryDirectory(prefix="ddnn-rootfs-") as root:
        log(f"base {tag}: debootstrap {SUITE} + {' '.join(BASE_PACKAGES)}")
        try:
            run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, root, MIRROR],
                stdout=subprocess.DEVNULL)
        finally:
            unmount_below(root)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/info", "var/log"):
            for p in (Path(root) / junk).glob("*"):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        tar = subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["/bin/bash"]',
             "--message", f"debootstrap --variant=minbase {SUITE} + {' '.join(BASE_PACKAGES)}", "-", tag],
            stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise SystemExit("tar of the debootstrap root failed")
        unmount_below(root)
    return tag


def unmount_below(root: str) -> None:
    """Lazily unmount what a failed debootstrap may have left mounted (proc, sys) before deleting ``root``."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(root.rstrip("/") + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def choose_base(mode: str, public: str) -> str:
    """The base to build on: ``public`` if present or pullable (mode auto/public), else the local one."""
    if mode in ("auto", "public"):
        if image_exists(public):
            return public
        try:
            pulled = subprocess.run(["docker", "pull", public], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            pulled = None
        if pulled is not None and pulled.returncode == 0:
            return public
        if mode == "public":
            raise SystemExit(f"cannot pull {public}")
        log(f"base: {public} cannot be pulled (no registry); using a local Debian base")
    return local_base()


def wheelhouse(name: str, req: Path) -> Path:
    """.cache/images/wheelhouse/<name>-<hash>: every wheel of ``req``, downloaded once."""
    out = CACHE / "wheelhouse" / f"{name}-{sha12(req.read_bytes())}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log(f"wheelhouse {out.name}: pip download -r {req.relative_to(REPO)}")
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes", "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *platforms,
         "-r", str(req), "-d", str(out)])
    (out / ".complete").touch()
    return out


def wheels_image() -> str:
    """ddnn-wheels:<hash>: /wheels/<name>/ for every requirement file (also tagged ddnn-wheels:current)."""
    reqs = sorted(REQUIREMENTS.glob("*.txt"))
    tag = f"ddnn-wheels:{sha12(*(r.name.encode() + r.read_bytes() for r in reqs))}"
    if not image_exists(tag):
        houses = {r.stem: wheelhouse(r.stem, r) for r in reqs}
        dockerfile = "FROM scratch\n" + "".join(f"COPY {h.name}/ /wheels/{n}/\n" for n, h in houses.items())
        ignore = "*\n" + "".join(f"!{h.name}\n{h.name}/.complete\n" for h in houses.values())
        context = CACHE / "wheelhouse"
        (context / ".dockerignore").write_text(ignore)
        log(f"wheels {tag}: {', '.join(houses)}")
        run(["docker", "build", "-q", "--network=none", "-t", tag, "-f", "-", str(context)], input=dockerfile.encode(),
            capture_output=True)
        for stale in context.iterdir():  # wheelhouses of older requirement files
            if stale.is_dir() and stale not in houses.values():
                shutil.rmtree(stale)
    run(["docker", "tag", tag, "ddnn-wheels:current"])
    return tag


def prometheus_deb() -> Path:
    """Debian's prometheus .deb, fetched by the host's apt into .cache/images/prometheus/."""
    where = CACHE / "prometheus"
    debs = sorted(where.glob("prometheus_*.deb"))
    if not debs:
        where.mkdir(parents=True, exist_ok=True)
        log("prometheus: apt-get download prometheus")
        run(["apt-get", "download", "-q", "prometheus"], cwd=where, capture_output=True)
        debs = sorted(where.glob("prometheus_*.deb"))
    return debs[-1]


def build(tag: str, dockerfile: Path, context: Path, args: dict[str, str]) -> None:
    cmd = ["docker", "build", "-q", "--network=none", "-t", tag, "-f", str(dockerfile)]  # nothing fetched inside
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    start = time.monotonic()
    done = subprocess.run([*cmd, str(context)], capture_output=True, text=True)
    if done.returncode != 0:  # the legacy builder's own output only when it failed
        raise SystemExit(f"docker build of {tag} failed:\n{done.stdout[-6000:]}{done.stderr[-6000:]}")
    log(f"{tag}: built in {time.monotonic() - start:.0f}s")


def size_mb(ref: str) -> float:
    out = run(["docker", "image", "inspect", "-f", "{{.Size}}", ref], capture_output=True, text=True).stdout
    return int(out) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", choices=["auto", "public", "local"], default=os.environ.get("DDNN_BASE", "auto"),
                        help="public: the Dockerfiles' default base; local: debootstrap; auto: public if pullable")
    parser.add_argument("--base-image", default=os.environ.get("BASE_IMAGE", ""),
                        help="build on this image instead (must have python3 with venv, Debian bookworm)")
    parser.add_argument("--only", nargs="*", default=[*SERVICE_IMAGES, "prometheus"],
                        help="images to build (edge cloud loadgen prometheus)")
    args = parser.parse_args(argv)
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise SystemExit("make images: no Docker engine answers (docker info failed)")
    start = time.monotonic()
    public = dockerfile_default(DOCKER_DIR / "edge.Dockerfile", "BASE_IMAGE")
    base = args.base_image or choose_base(args.base, public)
    log(f"base: {base}")
    built = []
    services = [s for s in SERVICE_IMAGES if s in args.only]
    if services:
        wheels = wheels_image()
        for name in services:
            tag = f"ddnn-{name}:{VERSION}"
            build(tag, DOCKER_DIR / SERVICE_IMAGES[name], REPO, {"BASE_IMAGE": base, "WHEELS_IMAGE": wheels})
            built.append(tag)
    if "prometheus" in args.only:
        deb = prometheus_deb()
        tag = f"ddnn-prometheus:{VERSION}"
        build(tag, DOCKER_DIR / "prometheus.Dockerfile", deb.parent, {"BASE_IMAGE": base, "DEB": deb.name})
        built.append(tag)
    for tag in [base, *built]:
        log(f"{tag:32s} {size_mb(tag):7.0f} MB")
    log(f"done in {time.monotonic() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
