"""The task root a synthesized function gets, built here without Docker or AWS.

- a zip asset: zipped and unzipped as ``cdk deploy`` ships it (:func:`maas_dev.lambda_bundle.unzip_asset`);
- an image asset: what ``docker/lambda.Dockerfile`` puts in ``${LAMBDA_TASK_ROOT}`` for its build target — the staged
  lock's packages (the wheels ``infra.build_deps`` installs from the same lock, for this machine's architecture), the
  context's ``functions/`` and ``artifacts/``, compiled by Lambda's Python; for the ``stream`` target also the server
  the Lambda Web Adapter forwards to (uvicorn at the Dockerfile's version and its requirements, pure Python, copied
  from this environment, which holds the lock's versions of them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from infra import lockfile, packaging
from maas_dev.lambda_bundle import unzip_asset

IMAGE_FILES = {"Dockerfile", "requirements.lock", "constraints.txt"}  # the context's build inputs, not the task root
STREAM_SERVER = "uvicorn"


class TaskRootError(RuntimeError):
    """A task root cannot be built as the deployment would build it."""


def dockerfile_arg(dockerfile: Path, name: str) -> str:
    """The default of ``ARG <name>=<value>`` in a Dockerfile."""
    match = re.search(rf"^ARG {re.escape(name)}=(\S+)$", dockerfile.read_text(encoding="utf-8"), flags=re.MULTILINE)
    if match is None:
        raise TaskRootError(f"{dockerfile} declares no default for ARG {name}")
    return match.group(1)


def zip_task_root(asset: Path, out: Path) -> Path:
    """A zip asset as Lambda unpacks it."""
    return unzip_asset(asset, out)


def image_task_root(
    context: Path, out: Path, *, task: str, lambda_deps: Path, target: str, architecture: str = "x86_64"
) -> Path:
    """An image asset's task root for ``target`` (``runtime`` or ``stream``), as its Dockerfile builds it."""
    dockerfile = (context / "Dockerfile").read_text(encoding="utf-8")
    if "--require-hashes" not in dockerfile or "requirements.lock" not in dockerfile:
        raise TaskRootError(f"{context}/Dockerfile no longer installs the staged lock hash-checked")
    staged = set(lockfile.read_lock(context / "requirements.lock"))
    extras = (None, *packaging.extras_for(task))
    sets = [packaging.deps_dir(lambda_deps, architecture, extra) for extra in extras]
    stamps = [packaging.deps_stamp(lambda_deps, architecture, extra) for extra in extras]
    built = {name for stamp in stamps for name in lockfile.read_lock(stamp)}
    if staged != built:  # the image must install exactly what the zips carry for its task
        raise TaskRootError(f"the image's lock and the built dependencies differ: {sorted(staged ^ built)}")
    out.mkdir(parents=True, exist_ok=True)
    for source in (*sets, context):
        for path in source.rglob("*"):
            if path.is_file() and path.name not in IMAGE_FILES:
                target_path = out / path.relative_to(source)
                target_path.parent.mkdir(parents=True, exist_ok=True)
                target_path.write_bytes(path.read_bytes())
    if target == "stream":
        version = dockerfile_arg(context / "Dockerfile", "UVICORN_VERSION")
        for name in _with_requirements(STREAM_SERVER):
            _copy_distribution(name, out, version if name == STREAM_SERVER else None)
    elif target != "runtime":
        raise TaskRootError(f"unknown image target {target!r}: docker/lambda.Dockerfile has runtime and stream")
    python = packaging.lambda_python()
    command = [str(python), "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", "-s", str(out)]
    subprocess.run([*command, "-p", "/var/task", str(out)], check=True, capture_output=True, timeout=900)
    for path in out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    out.chmod(0o755)
    return out


def _with_requirements(name: str) -> list[str]:
    """``name`` and the distributions it requires (no extras; markers for this Python), depth first."""
    found: list[str] = []

    def visit(current: str) -> None:
        if current in found:
            return
        found.append(current)
        for line in metadata.requires(current) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                visit(requirement.name)

    visit(name)
    return found


def _copy_distribution(name: str, out: Path, version: str | None) -> None:
    """Copy an installed pure-Python distribution's files (package and dist-info) as pip would install them."""
    distribution = metadata.distribution(name)
    if version is not None and distribution.version != version:
        raise TaskRootError(
            f"{name} {distribution.version} is installed here, but the image installs {version}: the local gateway "
            f"must serve the app with the image's server (install {name}=={version})"
        )
    for file in distribution.files or []:
        source = Path(str(distribution.locate_file(file)))
        if file.suffix in (".so", ".pyd"):
            raise TaskRootError(f"{name} is not pure Python ({file}): it cannot be copied across interpreters")
        if "__pycache__" in file.parts or ".." in file.parts or not source.is_file():
            continue
        target = out / Path(*file.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
