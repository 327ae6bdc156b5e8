"""Build the Lambda zips' runtime dependencies for one architecture: ``python -m infra.build_deps``.

This is the only packaging step that needs the network (the package index); run it before ``cdk
synth`` / ``cdk deploy``, never during. From ``functions/requirements.lock`` it installs, hash-checked,
as manylinux binary wheels for Lambda's Python and CPU, the base set every zip carries into
``build/lambda-deps/<arch>/`` and each extra set (pillow for image models) into
``build/lambda-deps/<arch>-<extra>/`` (see :func:`infra.packaging.dependency_sets`). It removes what
nothing imports at run time (:data:`UNUSED_AT_RUN_TIME`), then precompiles the rest with Lambda's own
Python version (unchecked-hash ``.pyc``: valid whatever mtimes the zip gives the sources, so a cold
start on the read-only task root never compiles). Last, it records the pins it installed next to each
directory (``<dir>.requirements.txt``): strict packaging refuses a directory whose pins differ from
the current lock.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from infra import lockfile
from infra.limits import LAMBDA_PYTHON_VERSION
from infra.packaging import (
    ARCHITECTURES,
    EXTRAS,
    LAMBDA_PYTHON_ENV,
    LOCK,
    PackagingError,
    dependency_sets,
    deps_dir,
    deps_stamp,
    dir_size,
    lambda_python,
)
from infra.settings import REPO_ROOT

# Lambda's Python 3.12+ runtimes run on Amazon Linux 2023 (glibc 2.34). pip takes a wheel only for a
# --platform it was given, so every manylinux tag glibc 2.34 can run is listed (numpy's are 2_27/2_28).
GLIBC_MINOR = 34
OLDEST_GLIBC_MINOR = {"arm64": 17, "x86_64": 5}  # aarch64 wheels start at manylinux2014 (glibc 2.17)
LEGACY_TAGS = {"arm64": ("manylinux2014",), "x86_64": ("manylinux2014", "manylinux2010", "manylinux1")}
# Installed files nothing imports on Lambda (globs under the dependency directory), removed before
# compiling: 22 MiB of the x86_64 base set, bytecode included.
UNUSED_AT_RUN_TIME = (
    "bin",  # console scripts, whose shebang names the build machine's interpreter
    "numpy/**/tests",  # numpy's own test suite
    "onnxruntime/transformers",  # offline model tools (optimizer, quantizer, converters): they need
    "onnxruntime/quantization",  # onnx/torch, which the runtime never has; InferenceSession needs none
    "onnxruntime/tools",
    "**/*.pyi",  # type stubs
)


class DepsBuildError(PackagingError):
    """The dependencies cannot be built on this machine as asked (a missing interpreter, a failed install)."""


def platform_tags(arch: str) -> list[str]:
    """Every manylinux platform tag Lambda's glibc runs on ``arch``, newest first, for pip's --platform."""
    machine = lockfile.MACHINES[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, OLDEST_GLIBC_MINOR[arch] - 1, -1)]
    return tags + [f"{legacy}_{machine}" for legacy in LEGACY_TAGS[arch]]


def pip_command(arch: str, target: Path, requirements: Path) -> list[str]:
    """``pip install`` of a hash-checked, fully pinned requirements file for Lambda's Python on ``arch``."""
    platforms = [option for tag in platform_tags(arch) for option in ("--platform", tag)]
    return [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--require-hashes", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
        "--python-version", LAMBDA_PYTHON_VERSION, *platforms,
        "--target", str(target), "--requirement", str(requirements),
    ]  # fmt: skip


def build(arch: str, out_dir: Path, lock: Path = LOCK, *, python: Path | None = None) -> list[Path]:
    """Build every dependency set of the lock for ``arch`` under ``out_dir`` (replacing them).

    Returns the directories: ``<out_dir>/<arch>`` first, then one ``<out_dir>/<arch>-<extra>`` per extra.
    """
    compiler = lambda_python(python)  # before anything is deleted: a missing interpreter changes nothing
    environment = lockfile.lambda_environment(arch, LAMBDA_PYTHON_VERSION)
    built = []
    for extra, pins in dependency_sets(lockfile.read_lock(lock)).items():
        target, stamp = deps_dir(out_dir, arch, extra), deps_stamp(out_dir, arch, extra)
        stamp.unlink(missing_ok=True)  # a failed build must not look current
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        pinned = lockfile.render(pins.values(), environment)
        with tempfile.TemporaryDirectory() as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text(pinned, encoding="utf-8")
            _run(pip_command(arch, target, requirements), f"installing {target.name} from {lock}")
        _remove_unused(target)
        compile_all = [str(compiler), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
        _run([*compile_all, str(target)], f"compiling {target} with {compiler}")
        stamp.write_text(pinned, encoding="utf-8")
        built.append(target)
    return built


def _remove_unused(target: Path) -> None:
    for pattern in UNUSED_AT_RUN_TIME:
        for path in sorted(target.glob(pattern), reverse=True):  # deepest first
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _run(command: list[str], doing: str) -> None:
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError as exc:
        raise DepsBuildError(f"{doing} failed (exit {exc.returncode}): {' '.join(command)}") from exc


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arch", choices=ARCHITECTURES, default="arm64")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "lambda-deps")
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument(
        "--lambda-python", type=Path, help=f"CPython {LAMBDA_PYTHON_VERSION} (default: ${LAMBDA_PYTHON_ENV} or found)"
    )
    args = parser.parse_args(argv)
    try:
        built = build(args.arch, args.out, args.lock, python=args.lambda_python)
    except PackagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for target in built:
        print(f"{target}: {dir_size(target) / 2**20:.1f} MiB unzipped, with bytecode")
    if EXTRAS:
        print(f"a zip carries {built[0].name}/ plus the extras its task needs (infra.packaging.IMAGE_EXTRA_TASKS)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
