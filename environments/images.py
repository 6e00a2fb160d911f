"""Build the reference model images with no registry: the air-gapped path real teams use.

Wheels are downloaded on the host (``pip download``) into a cache and copied into the build
context; the image installs them with ``--no-index``. The base image is a build argument:
``python:3.11-slim`` when the engine has it or can pull it, otherwise a Debian base made
offline with debootstrap and ``docker import``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bluegreen.environments.runtime import DockerRuntime, _reason
from bluegreen.orchestrator.errors import ImageBuildError

Progress = Callable[[str], None]

REGISTRY_BASE = "python:3.11-slim"
OFFLINE_BASE = "bluegreen-base:bookworm"
SUITE = "bookworm"  # its python3 is 3.11, the version the wheels are fetched for
# What the reference server runs on: scikit-learn for the models, uvicorn (with its C HTTP parser
# and event loop) for HTTP, psycopg for a PostgreSQL application database.
REQUIREMENTS = ("scikit-learn>=1.4,<2", "psycopg[binary]>=3.1,<4", "uvicorn>=0.30,<1", "httptools>=0.6,<1",
                "uvloop>=0.19,<1")
SERVER_FILES = ("Dockerfile", "app.py", "models.py", "store.py", "train.py")
# The reference model families: repository -> the task its images are trained for.
REFERENCE = {"bluegreen-model": "classification", "bluegreen-regressor": "regression"}
DIGEST_LABEL = "bluegreen.source-digest"


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    id: str
    built: bool  # False when it already existed and was kept


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bluegreen"


def debian_mirror(sources: Iterable[Path] = ()) -> str:
    """The Debian mirror apt already uses on this host, so debootstrap reaches what apt reaches."""
    paths = list(sources) or [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.MULTILINE):
            uri = match.group(1)
            if "security" not in uri and uri.startswith(("http://", "https://", "file:")):
                return uri
    return "http://deb.debian.org/debian"


def resolve_base(runtime: DockerRuntime, wanted: str, progress: Progress) -> str:
    """The base image to build FROM: the configured one, else python:3.11-slim, else offline."""
    import docker

    if wanted:
        if not runtime.image_exists(wanted):
            progress(f"pulling base image {wanted}")
            try:
                runtime.client.images.pull(wanted)
            except docker.errors.DockerException as exc:
                raise ImageBuildError(
                    f"base image {wanted} is not on the engine and cannot be pulled: {_reason(exc)}",
                    "set images.base = \"\" to build an offline base, or load the image with docker load",
                ) from None
        return wanted
    if runtime.image_exists(REGISTRY_BASE):
        return REGISTRY_BASE
    try:
        runtime.client.images.pull(REGISTRY_BASE)
        return REGISTRY_BASE
    except docker.errors.DockerException:
        progress(f"{REGISTRY_BASE} cannot be pulled (no registry): using an offline Debian base")
    if not runtime.image_exists(OFFLINE_BASE):
        make_offline_base(runtime, progress)
    return OFFLINE_BASE


def make_offline_base(runtime: DockerRuntime, progress: Progress) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "no base image: the registry is unreachable and debootstrap is not installed",
            "apt-get install debootstrap, then bluegreen images build",
        )
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="bluegreen-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"debootstrap {SUITE} from {mirror} (about a minute)")
        cmd = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", SUITE, str(rootfs), mirror]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise ImageBuildError(f"debootstrap failed (exit {proc.returncode}):\n{tail}",
                                  "run it as root; check that apt-get update works")
        # Trim what a server image never needs.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(rootfs / sub, ignore_errors=True)
        archive = Path(tmp) / "rootfs.tar"
        progress(f"importing {OFFLINE_BASE}")
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        repo, tag = OFFLINE_BASE.split(":")
        try:
            runtime.client.api.import_image_from_file(str(archive), repository=repo, tag=tag)
        except Exception as exc:
            raise ImageBuildError(f"docker import of the offline base failed: {_reason(exc)}") from None


def download_wheels(dest: Path, progress: Progress) -> None:
    """pip download the image's wheels for CPython 3.11 on manylinux x86_64 (cached)."""
    marker = dest / ".complete"
    if marker.exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    progress("downloading wheels for the image (pip download)")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "--dest", str(dest), *REQUIREMENTS]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ImageBuildError(f"pip download failed:\n{tail}", "check that the package index is reachable")
    marker.touch()


def source_digest() -> str:
    """A digest of everything that goes into a reference image; a change means a rebuild."""
    h = hashlib.sha256()
    server = resources.files("bluegreen.environments").joinpath("model_server")
    for name in SERVER_FILES:
        h.update(name.encode() + b"\0" + server.joinpath(name).read_bytes() + b"\0")
    h.update(" ".join(REQUIREMENTS).encode())
    return h.hexdigest()[:16]


def _current(runtime: DockerRuntime, ref: str, digest: str) -> str | None:
    """The image id when ``ref`` exists and was built from these sources, else None."""
    import docker

    try:
        image = runtime.client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"cannot look up image {ref}: {_reason(exc)}") from None
    labels = image.labels or {}
    return str(image.short_id) if labels.get(DIGEST_LABEL) == digest else None


def build_images(
    runtime: DockerRuntime,
    repository: str,
    tags: Iterable[str],
    base: str = "",
    force: bool = False,
    progress: Progress = lambda _msg: None,
) -> list[BuiltImage]:
    """Build ``repository:tag`` for each tag; keep tags already built from these sources unless ``force``.

    ``repository`` is one of the reference families (``REFERENCE``): it decides what is trained.
    """
    import docker

    if repository not in REFERENCE:
        raise ImageBuildError(
            f"{repository} is not a reference model image (those are {', '.join(REFERENCE)})",
            "build your own image with docker build, or pass --repository bluegreen-model   (runbooks/images.md)")
    task = REFERENCE[repository]
    digest = source_digest()
    results, todo = [], []
    for tag in tags:
        existing = None if force else _current(runtime, f"{repository}:{tag}", digest)
        if existing:
            results.append(BuiltImage(f"{repository}:{tag}", existing, False))
        else:
            todo.append(tag)
    if not todo:
        return results
    base_image = resolve_base(runtime, base, progress)
    # One cache per requirement set: a changed list never installs from a stale download.
    wheels = cache_dir() / f"wheels-py311-{hashlib.sha256(' '.join(REQUIREMENTS).encode()).hexdigest()[:12]}"
    download_wheels(wheels, progress)
    with tempfile.TemporaryDirectory(prefix="bluegreen-build-") as tmp:
        ctx = Path(tmp)
        server = resources.files("bluegreen.environments").joinpath("model_server")
        for name in SERVER_FILES:
            (ctx / name).write_bytes(server.joinpath(name).read_bytes())
        shutil.copytree(wheels, ctx / "wheels", ignore=shutil.ignore_patterns(".complete"))
        (ctx / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
        for tag in todo:
            ref = f"{repository}:{tag}"
            progress(f"building {ref} FROM {base_image}")
            log: list[str] = []
            try:
                for chunk in runtime.client.api.build(
                    path=str(ctx), tag=ref, buildargs={"BASE_IMAGE": base_image, "MODEL_VERSION": tag, "TASK": task},
                    network_mode="host", rm=True, forcerm=True, decode=True,
                    labels={DIGEST_LABEL: digest},
                ):
                    if "error" in chunk:
                        raise ImageBuildError(f"building {ref} failed: {chunk['error'].strip()}\n"
                                              + "".join(log[-10:]).rstrip())
                    if "stream" in chunk:
                        log.append(chunk["stream"])
            except docker.errors.DockerException as exc:
                raise ImageBuildError(f"building {ref} failed: {_reason(exc)}") from None
            results.append(BuiltImage(ref, runtime.client.images.get(ref).short_id, True))
    return results
