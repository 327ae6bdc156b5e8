"""Lambda's arm64 Python on this x86_64 machine: CPython 3.13 for aarch64 under QEMU user-mode emulation.

Lambda's default architecture (the catalog's) is arm64, and the bundle tests must run the zips that deploy, not
only their x86_64 twins. ``python -m maas_dev.emulation`` fetches, from Debian's package registry and without
root-owned state:

- ``qemu-aarch64`` from Debian 13 (QEMU 10, statically linked). QEMU 8.1 and later answer an aarch64 program's
  reads of ``/proc/cpuinfo`` with an emulated CPU; older ones pass the host's x86 file through, and
  onnxruntime's CPU detection (pytorch/cpuinfo) crashes on it at import (seen with Debian 12's QEMU 7.2);
- Debian 13's ``python3.13`` for arm64 and the shared libraries it and the wheels need (libstdc++, libgomp:
  what Lambda's Amazon Linux provides), unpacked into ``root/`` with ``dpkg-deb -x`` (nothing is configured or
  run at set-up).

An aarch64 program then runs as ``qemu-aarch64 -cpu neoverse-n1 -L root root/usr/bin/python3.13 ...``: no binfmt
registration, nothing changed outside the output folder. The CPU is Lambda's: arm64 functions launched on
Graviton2 (Neoverse N1: dot-product instructions, no i8mm, no SVE; AWS's docs now say "AWS Graviton
processors", so the tests also try ``neoverse-v1``, Graviton3), and onnxruntime picks its INT8 kernels by what
the CPU offers, which changes the numbers (QEMU's ``max`` CPU, with i8mm, SVE and SME, gave minilm-embed mean
cosine 0.9980 against torch where Neoverse N1 and x86-64 give 0.9958). ``$MAAS_ARM64_CPU`` names another.
Timings under emulation say nothing about arm64's speed: this is for behaviour (the right wheels, the right
bytecode, the same answers and gates), not for benchmarks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from infra import limits

ENV = "MAAS_ARM64_LAMBDA"  # a folder made by this module; default build/arm64-lambda
CPU_ENV = "MAAS_ARM64_CPU"
LAMBDA_CPU = "neoverse-n1"  # Graviton2, what Lambda's arm64 functions run on
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "build" / "arm64-lambda"
SUITE = "trixie"  # Debian 13: CPython 3.13 (Lambda's version), QEMU 10
MIRROR = "http://deb.debian.org/debian"
ARM64_PACKAGES = (f"python{limits.LAMBDA_PYTHON_VERSION}", "libstdc++6", "libgomp1")
QEMU_PACKAGE = "qemu-user"  # Debian 13's is statically linked
MIN_QEMU = (8, 1)


class EmulationUnavailable(RuntimeError):
    """No emulated arm64 Python here; the message says how to make one."""


@dataclass(frozen=True)
class Arm64Python:
    """An aarch64 CPython of Lambda's version, run through QEMU."""

    qemu: Path
    root: Path
    cpu: str = LAMBDA_CPU

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / f"python{limits.LAMBDA_PYTHON_VERSION}"

    @property
    def emulator(self) -> tuple[str, ...]:
        """What goes before the interpreter's path on a command line."""
        return (str(self.qemu), "-cpu", self.cpu, "-L", str(self.root))

    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.emulator, str(self.python), *args], capture_output=True, text=True,
                              check=False, **kwargs)  # type: ignore[call-overload]  # fmt: skip


def find(folder: Path | None = None) -> Arm64Python:
    """The emulated Python made by :func:`setup` in ``folder`` (``$MAAS_ARM64_LAMBDA``, else build/arm64-lambda);
    raises :class:`EmulationUnavailable`, saying how to make it, when it is missing or cannot run here."""
    folder = folder or Path(os.environ.get(ENV) or DEFAULT_DIR)
    found = Arm64Python(qemu=folder / "qemu-aarch64", root=folder / "root", cpu=os.environ.get(CPU_ENV) or LAMBDA_CPU)
    how = f"make it with `python -m maas_dev.emulation --out {folder}` (needs apt-get and Debian's registry)"
    if not found.qemu.is_file() or not found.python.is_file():
        raise EmulationUnavailable(f"no emulated arm64 Python in {folder}: {how}")
    probe = found.run("-I", "-S", "-c", "import platform, sys; print(platform.machine(), *sys.version_info[:2])",
                      timeout=120)  # fmt: skip
    wanted = f"aarch64 {limits.LAMBDA_PYTHON_VERSION.replace('.', ' ')}"
    if probe.returncode != 0 or probe.stdout.strip() != wanted:
        raise EmulationUnavailable(f"{found.python} under {found.qemu} did not run ({probe.stderr[-500:]}): {how}")
    return found


def qemu_version(qemu: Path) -> tuple[int, int]:
    out = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = out.split("version", 1)[1].split()[0].split(".")[:2]
    return int(major), int(minor)


def _apt(state: Path, architecture: str, *args: str) -> None:
    """apt-get against Debian 13 for ``architecture``, with every list, cache and status file in ``state``."""
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "status").touch()  # nothing installed: a download brings the whole dependency closure
    sources = state / "sources.list"
    sources.write_text(f"deb [arch={architecture}] {MIRROR} {SUITE} main\n")
    options = {
        "Dir::Etc::SourceList": sources,
        "Dir::Etc::SourceParts": "/dev/null",
        "Dir::State::Lists": state / "lists",
        "Dir::Cache": state / "cache",
        "Dir::State::status": state / "status",
        "APT::Architecture": architecture,
        "APT::Architectures::": architecture,
        "Debug::NoLocking": "1",
        "APT::Sandbox::User": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
    }
    command = ["apt-get", "-q", "-y", *[f"-o{key}={value}" for key, value in options.items()], *args]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise EmulationUnavailable(f"{' '.join(command[:3])} ... {' '.join(args)} failed:\n{run.stderr[-2000:]}")


def setup(out: Path) -> Arm64Python:
    """Fetch QEMU and the arm64 Python into ``out`` (replacing what is there); returns it, checked to run."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise EmulationUnavailable("needs apt-get and dpkg-deb (a Debian or Ubuntu machine)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maas-arm64-") as scratch:
        work = Path(scratch)
        host = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout
        host = host.strip()  # QEMU for this machine (amd64 here; an arm64 host emulates Graviton's core the same way)
        _apt(work / host, host, "update")
        _apt(work / host, host, "install", "--download-only", "--no-install-recommends", QEMU_PACKAGE)
        (qemu_deb,) = (work / host / "cache" / "archives").glob(f"{QEMU_PACKAGE}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(qemu_deb), str(work / "qemu")], check=True)
        qemu = out / "qemu-aarch64"
        shutil.copy2(work / "qemu" / "usr" / "bin" / "qemu-aarch64", qemu)
        if qemu_version(qemu) < MIN_QEMU:
            raise EmulationUnavailable(f"{qemu} is older than QEMU {'.'.join(map(str, MIN_QEMU))}")
        _apt(work / "arm64", "arm64", "update")
        _apt(work / "arm64", "arm64", "install", "--download-only", "--no-install-recommends", *ARM64_PACKAGES)
        root = out / "root"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        for deb in sorted((work / "arm64" / "cache" / "archives").glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for name in ("lib", "bin", "sbin"):  # Debian 13 is merged-/usr: the loader is asked for as /lib/ld-linux-…
        if not (root / name).exists():
            (root / name).symlink_to(f"usr/{name}")
    for path in (out, *out.rglob("*")):  # the bundle tests run it as an unprivileged user
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return find(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get(ENV) or DEFAULT_DIR))
    parser.add_argument(
        "--if-possible", action="store_true", help="where it cannot be made, say why and exit 0 (its tests then skip)"
    )
    args = parser.parse_args(argv)
    try:
        try:
            found = find(args.out)
            print(f"arm64 Lambda Python already in {args.out}")
        except EmulationUnavailable:
            found = setup(args.out)
            print(f"arm64 Lambda Python made in {args.out}")
    except (EmulationUnavailable, OSError, subprocess.CalledProcessError) as exc:
        print(f"no emulated arm64 Python: {exc}", file=sys.stderr)
        return 0 if args.if_possible else 1
    print(f"  {' '.join(found.emulator)} {found.python}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
