"""Stage what each model's function or container is built from, without Docker and without network.

A Lambda zip is a staged directory: the ``functions/`` package, the model's artifact under
``artifacts/<name>/`` (unless it is read from S3 at init) and the runtime dependencies, pre-built for
the function's architecture from ``functions/requirements.txt`` by ``python -m infra.build_deps`` (the
only step that needs the network, run before ``cdk synth``). Strict packaging refuses dependencies
built from other requirements than the current file (a stamp written next to them records which).
A Docker build context is staged the same way with its Dockerfile from ``docker/`` and the same
``requirements.txt``; the CDK CLI builds it at deploy time, never at synth. Files are hard-linked
when possible, so staging a large model costs no copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from infra import limits
from infra.config import ModelSpec
from infra.errors import InfraConfigError
from infra.settings import REPO_ROOT, EnvironmentConfig

FUNCTIONS_DIR = REPO_ROOT / "functions"
DOCKER_DIR = REPO_ROOT / "docker"
REQUIREMENTS = FUNCTIONS_DIR / "requirements.txt"
LAMBDA_DOCKERFILE = DOCKER_DIR / "lambda.Dockerfile"
GPU_DOCKERFILE = DOCKER_DIR / "gpu.Dockerfile"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")


class PackagingError(InfraConfigError):
    """Something a deployable package needs is missing (use ``-c packaging=preview`` to only preview)."""


def dir_size(path: Path) -> int:
    """Total size in bytes of the regular files under ``path`` (symlinks are not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def requirement_lines(text: str) -> list[str]:
    """The requirement specifiers of a requirements file: comments, blank lines and spacing dropped."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return ["".join(line.split()) for line in lines if line]


def deps_stamp(lambda_deps_dir: Path, architecture: str) -> Path:
    """Where ``infra.build_deps`` records the requirements a dependency directory was built from.

    Next to ``<lambda_deps_dir>/<arch>/``, not inside it, so it is neither zipped nor measured.
    """
    return lambda_deps_dir / f"{architecture}.requirements.txt"


def check_deps_current(deps: Path, stamp: Path, requirements: Path = REQUIREMENTS) -> None:
    """Refuse dependencies built from another requirements file than the current one."""
    rebuild = f"rebuild them with `python -m infra.build_deps --arch {deps.name}`"
    if not requirements.is_file():
        raise PackagingError(f"{requirements} is missing: the runtime dependencies cannot be checked or built")
    if not stamp.is_file():
        raise PackagingError(f"{deps} has no record of the requirements it was built from ({stamp}); {rebuild}")
    wanted = requirement_lines(requirements.read_text(encoding="utf-8"))
    built = requirement_lines(stamp.read_text(encoding="utf-8"))
    if built != wanted:
        missing = sorted(set(wanted) - set(built))
        detail = f" (not in the build: {', '.join(missing)})" if missing else ""
        raise PackagingError(f"{deps} was built from other requirements than {requirements}{detail}; {rebuild}")


def runtime_bytes_by_arch(env: EnvironmentConfig) -> dict[str, int]:
    """Unzipped size of the runtime dependencies per architecture: measured if built, else estimated."""
    sizes = {}
    for arch in ("arm64", "x86_64"):
        deps = env.lambda_deps_dir / arch
        measured = dir_size(deps) if deps.is_dir() else 0
        code = dir_size(FUNCTIONS_DIR) if FUNCTIONS_DIR.is_dir() else 0
        sizes[arch] = (measured or limits.RUNTIME_DEPS_ESTIMATE_BYTES) + code
    return sizes


def stage_lambda_zip(spec: ModelSpec, env: EnvironmentConfig, *, architecture: str) -> Path:
    """Stage the zip contents for a Lambda model; returns the directory to use as the code asset."""
    out = _fresh(env.staging_dir / env.stage / spec.name / "zip")
    deps = env.lambda_deps_dir / architecture
    if deps.is_dir() and any(deps.iterdir()):
        if env.packaging == "strict":
            check_deps_current(deps, deps_stamp(env.lambda_deps_dir, architecture))
        _link_tree(deps, out)
    elif env.packaging == "strict":
        raise PackagingError(
            f"model {spec.name!r}: no runtime dependencies for {architecture} in {deps}. Build them with "
            f"`python -m infra.build_deps --arch {architecture}` (see docs/infra.md), or preview the "
            f"infrastructure without them with -c packaging=preview"
        )
    _link_tree(FUNCTIONS_DIR, out / "functions")
    _stage_artifact(spec, env, out)
    return out


def stage_docker_context(spec: ModelSpec, env: EnvironmentConfig, *, dockerfile: Path) -> Path:
    """Stage a minimal Docker build context: Dockerfile, requirements, ``functions/`` and the artifact."""
    out = _fresh(env.staging_dir / env.stage / spec.name / "image")
    shutil.copy2(dockerfile, out / "Dockerfile")
    # The runtime's requirements are source, not a build output: required in preview too.
    if not REQUIREMENTS.is_file():
        raise PackagingError(f"model {spec.name!r}: {REQUIREMENTS} is missing; the image cannot be built")
    shutil.copy2(REQUIREMENTS, out / "requirements.txt")
    _link_tree(FUNCTIONS_DIR, out / "functions")
    (out / "artifacts" / spec.name).mkdir(parents=True, exist_ok=True)
    _stage_artifact(spec, env, out)
    return out


def _stage_artifact(spec: ModelSpec, env: EnvironmentConfig, out: Path) -> None:
    """Copy the artifact into ``<out>/artifacts/<name>/`` when the model ships inside the package."""
    bundled = getattr(spec.deploy, "model_source", "bundled") == "bundled"
    if not bundled or not spec.artifact.built:
        return
    target = out / "artifacts" / spec.name
    target.mkdir(parents=True, exist_ok=True)
    for name in [*spec.artifact.files, "manifest.json"]:
        source = spec.artifact.directory / name
        if source.is_file():
            _link(source, target / name)
        elif env.packaging == "strict":
            raise PackagingError(
                f"model {spec.name!r}: the manifest lists {name} but {source} does not exist; rebuild the "
                f"model or preview with -c packaging=preview"
            )


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _link(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, dest)


def _link_tree(source: Path, dest: Path) -> None:
    if not source.is_dir():
        raise PackagingError(f"{source} does not exist")

    def copy(src: str, dst: str) -> None:
        _link(Path(src), Path(dst))

    shutil.copytree(source, dest, ignore=_IGNORED, copy_function=copy, dirs_exist_ok=True)
