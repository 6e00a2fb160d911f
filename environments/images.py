"""Build model images with no registry: the air-gapped path real teams use.

Each image comes from a *recipe*: a folder of build files in this package, the wheels it needs,
and its build arguments. The reference families (``bluegreen-model``, an iris classifier;
``bluegreen-regressor``, a diabetes regressor) are bluegreen's own server; the examples are real
third-party servers, built the same way, that the model contract is tested against
(``bluegreen-mlflow``: MLflow's scoring server; ``bluegreen-mlserver``: MLServer, speaking the
Open Inference Protocol).

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


@dataclass(frozen=True)
class Recipe:
    repository: str
    folder: str  # under bluegreen/environments
    files: tuple[str, ...]
    requirements: tuple[str, ...]  # installed from downloaded wheels
    buildargs: tuple[tuple[str, str], ...] = ()
    example: bool = False  # a third-party server for tests and docs, not a reference model


# The reference server: scikit-learn for the models, uvicorn (with its C HTTP parser and event
# loop) for HTTP, psycopg for a PostgreSQL application database.
_SERVER = ("Dockerfile", "app.py", "jobs.py", "models.py", "store.py", "train.py")
_SERVER_NEEDS = ("scikit-learn>=1.4,<2", "psycopg[binary]>=3.1,<4", "uvicorn>=0.30,<1", "httptools>=0.6,<1",
                 "uvloop>=0.19,<1")
RECIPES = {r.repository: r for r in (
    Recipe("bluegreen-model", "model_server", _SERVER, _SERVER_NEEDS, (("TASK", "classification"),)),
    Recipe("bluegreen-regressor", "model_server", _SERVER, _SERVER_NEEDS, (("TASK", "regression"),)),
    # MLflow's scoring server needs pandas, which mlflow-skinny does not install.
    Recipe("bluegreen-mlflow", "examples/mlflow", ("Dockerfile", "train.py"),
           ("mlflow-skinny>=3,<4", "scikit-learn>=1.4,<2", "pandas>=2,<3", "uvicorn>=0.30,<1"), example=True),
    Recipe("bluegreen-mlserver", "examples/mlserver", ("Dockerfile", "train.py", "settings.json"),
           ("mlserver>=1.6,<2", "mlserver-sklearn>=1.6,<2"), example=True),
    # HAProxy and nginx from Debian, for the supervised proxy container.
    Recipe("bluegreen-proxy", "proxy_image", ("Dockerfile",), ()),
)}
PROXY = "bluegreen-proxy"
REFERENCE = [r.repository for r in RECIPES.values() if not r.example and r.repository != PROXY]
EXAMPLES = [r.repository for r in RECIPES.values() if r.example]
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
            except (docker.errors.DockerException, OSError) as exc:
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


def download_wheels(dest: Path, requirements: Iterable[str], progress: Progress) -> None:
    """pip download the image's wheels for CPython 3.11 on manylinux x86_64 (cached)."""
    marker = dest / ".complete"
    if marker.exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    progress("downloading wheels for the image (pip download)")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "--dest", str(dest), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ImageBuildError(f"pip download failed:\n{tail}", "check that the package index is reachable")
    marker.touch()


def source_digest(recipe: Recipe) -> str:
    """A digest of everything that goes into a recipe's images; a change means a rebuild."""
    h = hashlib.sha256()
    folder = resources.files("bluegreen.environments").joinpath(recipe.folder)
    for name in recipe.files:
        h.update(name.encode() + b"\0" + folder.joinpath(name).read_bytes() + b"\0")
    h.update(" ".join(recipe.requirements).encode() + repr(recipe.buildargs).encode())
    return h.hexdigest()[:16]


def _current(runtime: DockerRuntime, ref: str, digest: str) -> str | None:
    """The image id when ``ref`` exists and was built from these sources, else None."""
    import docker

    try:
        image = runtime.client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.DockerException, OSError) as exc:
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

    ``repository`` names a recipe (``RECIPES``): it decides the build files, wheels and arguments.
    """
    import docker

    recipe = RECIPES.get(repository)
    if recipe is None:
        raise ImageBuildError(
            f"{repository} is not an image bluegreen builds (those are {', '.join(RECIPES)})",
            "build your own image with docker build, or pass --repository bluegreen-model   (runbooks/images.md)")
    digest = source_digest(recipe)
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
    key = hashlib.sha256(" ".join(recipe.requirements).encode()).hexdigest()[:12]
    wheels = cache_dir() / f"wheels-py311-{key}"
    if recipe.requirements:
        download_wheels(wheels, recipe.requirements, progress)
    else:
        wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bluegreen-build-") as tmp:
        ctx = Path(tmp)
        folder = resources.files("bluegreen.environments").joinpath(recipe.folder)
        for name in recipe.files:
            (ctx / name).write_bytes(folder.joinpath(name).read_bytes())
        shutil.copytree(wheels, ctx / "wheels", ignore=shutil.ignore_patterns(".complete"))
        (ctx / "requirements.txt").write_text("\n".join(recipe.requirements) + "\n")
        for tag in todo:
            ref = f"{repository}:{tag}"
            progress(f"building {ref} FROM {base_image}")
            log: list[str] = []
            try:
                for chunk in runtime.client.api.build(
                    path=str(ctx), tag=ref,
                    buildargs={"BASE_IMAGE": base_image, "MODEL_VERSION": tag, **dict(recipe.buildargs)},
                    network_mode="host", rm=True, forcerm=True, decode=True,
                    labels={DIGEST_LABEL: digest},
                ):
                    if "error" in chunk:
                        raise ImageBuildError(f"building {ref} failed: {chunk['error'].strip()}\n"
                                              + "".join(log[-10:]).rstrip())
                    if "stream" in chunk:
                        log.append(chunk["stream"])
            except (docker.errors.DockerException, OSError) as exc:
                raise ImageBuildError(f"building {ref} failed: {_reason(exc)}") from None
            results.append(BuiltImage(ref, runtime.client.images.get(ref).short_id, True))
    return results
