"""Build the Lambda zip's runtime dependencies for one architecture: ``python -m infra.build_deps``.

This is the only packaging step that needs the network (PyPI); run it before ``cdk synth`` /
``cdk deploy``, never during. It installs ``functions/requirements.txt`` as manylinux binary wheels
for the Lambda Python version and CPU into ``build/lambda-deps/<arch>/``, which infra/packaging.py
copies into every zip of that architecture (and whose measured size replaces the sizing estimate).
A copy of the requirements it installed is written next to it (``<arch>.requirements.txt``): strict
packaging refuses a dependency directory whose record differs from the current requirements file.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from infra.limits import LAMBDA_PYTHON_VERSION
from infra.packaging import REQUIREMENTS, deps_stamp, dir_size
from infra.settings import REPO_ROOT

# Lambda's Python 3.12+ runtimes run on Amazon Linux 2023 (glibc 2.34); pip accepts older manylinux tags too.
PLATFORMS = {"arm64": "manylinux_2_34_aarch64", "x86_64": "manylinux_2_34_x86_64"}
# The Lambda runtime ships the AWS SDK; bundling another copy costs ~25 MB unzipped for nothing.
PROVIDED_BY_RUNTIME = ("boto3", "botocore", "s3transfer")


def build(arch: str, out_dir: Path, requirements: Path = REQUIREMENTS) -> Path:
    """Install the requirements for ``arch`` into ``out_dir/<arch>`` (replacing it); returns that dir."""
    target = out_dir / arch
    stamp = deps_stamp(out_dir, arch)
    stamp.unlink(missing_ok=True)  # a failed build must not look current
    if target.exists():
        shutil.rmtree(target)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--only-binary=:all:",
        "--implementation", "cp", "--python-version", LAMBDA_PYTHON_VERSION, "--platform", PLATFORMS[arch],
        "--target", str(target), "--requirement", str(requirements),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    for name in PROVIDED_BY_RUNTIME:
        for path in target.glob(f"{name}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    shutil.copyfile(requirements, stamp)
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "lambda-deps")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    args = parser.parse_args(argv)
    target = build(args.arch, args.out, args.requirements)
    print(f"{target}: {dir_size(target) / 2**20:.1f} MiB unzipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
