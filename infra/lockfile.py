"""Read ``functions/requirements.lock`` and derive what each runtime installs from it.

The lock (``make lock``: ``uv pip compile --universal --generate-hashes``) pins every runtime
distribution once, with its hashes and the distributions that require it (``# via``). From it come:
the Lambda dependency sets (:func:`select` leaves out what no zip imports, and whatever only that
needed), a hash-checked requirements file for one target (:func:`render`, markers evaluated for
Lambda's Python and CPU), and the hash-free constraints that hold the test environment and the GPU
image's extra packages to the same versions (:func:`constraints`; pip refuses hashes there).

``python -m infra.lockfile constraints`` prints those constraints (used by ``make install``).
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from infra.errors import InfraConfigError

LOCK = Path(__file__).resolve().parents[1] / "functions" / "requirements.lock"
ROOT = "-r"  # ``# via -r functions/requirements.txt``: a distribution the runtime asks for by name
# Lambda's CPU names (``architecture`` in the catalog) as ``platform_machine`` spells them.
MACHINES = {"arm64": "aarch64", "x86_64": "x86_64"}


class LockFileError(InfraConfigError):
    """``functions/requirements.lock`` is missing or not what ``make lock`` writes."""


@dataclass(frozen=True)
class Pin:
    """One locked distribution: ``name==version ; marker`` with its hashes and who requires it."""

    name: str  # canonical (PEP 503) name
    version: str
    marker: str | None
    hashes: tuple[str, ...]
    required_by: frozenset[str]  # canonical names, or ROOT

    def applies(self, environment: Mapping[str, str]) -> bool:
        """Whether the pin's environment marker holds in ``environment`` (PEP 508 marker variables)."""
        return self.marker is None or Marker(self.marker).evaluate(dict(environment))


def read_lock(path: Path = LOCK) -> dict[str, Pin]:
    """The pins of a lock file written by ``uv pip compile --generate-hashes`` (or pip-compile), by name."""
    if not path.is_file():
        raise LockFileError(f"{path} is missing; write it with `make lock` (uv pip compile, see the Makefile)")
    pins: dict[str, Pin] = {}
    for block in _blocks(path.read_text(encoding="utf-8")):
        head, *rest = block
        spec, _, marker = head.rstrip("\\ ").partition(";")
        name, sep, version = spec.strip().partition("==")
        if not sep or not version:
            raise LockFileError(f"{path}: {head!r} is not pinned with ==; rerun `make lock`")
        hashes = tuple(line.strip().rstrip("\\ ").removeprefix("--hash=") for line in rest if "--hash=" in line)
        if not hashes:
            raise LockFileError(f"{path}: {name} has no hashes; rerun `make lock` (it passes --generate-hashes)")
        canonical = canonicalize_name(name)
        if canonical in pins:
            raise LockFileError(f"{path}: {name} is pinned twice; `make lock` resolves one version per package")
        pins[canonical] = Pin(canonical, version.strip(), marker.strip() or None, hashes, _required_by(rest))
    return pins


def select(pins: Mapping[str, Pin], *, leave_out: Collection[str] = ()) -> dict[str, Pin]:
    """The pins the runtime needs without ``leave_out``: those it asks for, and what they require."""
    excluded = {canonicalize_name(name) for name in leave_out}
    kept: dict[str, Pin] = {}
    grew = True
    while grew:
        grew = False
        for pin in pins.values():
            if pin.name in kept or pin.name in excluded:
                continue
            if ROOT in pin.required_by or pin.required_by & kept.keys():
                kept[pin.name] = pin
                grew = True
    return {name: pin for name, pin in pins.items() if name in kept}  # the lock's order


def lambda_environment(architecture: str, python_version: str) -> dict[str, str]:
    """PEP 508 marker variables of a Lambda Python runtime (Amazon Linux, CPython) on ``architecture``."""
    full = f"{python_version}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": MACHINES[architecture],
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": full,
        "python_version": python_version,
        "sys_platform": "linux",
    }


def render(pins: Iterable[Pin], environment: Mapping[str, str] | None = None) -> str:
    """A hash-checked requirements file (``pip install --require-hashes --no-deps -r``).

    With ``environment``, pins whose marker does not hold there are dropped and markers are left out
    (pip evaluates markers for the interpreter it runs on, not for ``--platform``); without it, the
    markers stay for the installing pip to evaluate.
    """
    lines = []
    for pin in pins:
        if environment is not None and not pin.applies(environment):
            continue
        marker = f" ; {pin.marker}" if pin.marker and environment is None else ""
        lines.append(f"{pin.name}=={pin.version}{marker} \\")
        lines += [f"    --hash={digest} \\" for digest in pin.hashes[:-1]] + [f"    --hash={pin.hashes[-1]}"]
    return "\n".join(lines) + "\n"


def constraints(pins: Iterable[Pin]) -> str:
    """The pins as a pip constraints file: versions and markers, no hashes."""
    return "".join(f"{pin.name}=={pin.version}{f' ; {pin.marker}' if pin.marker else ''}\n" for pin in pins)


def _blocks(text: str) -> Iterable[list[str]]:
    """Each requirement's lines: its ``name==version`` line, then its indented hashes and ``# via`` comments.

    Unindented comments (the header, pip-compile's notes on unsafe packages) belong to no requirement.
    """
    block: list[str] = []
    for line in text.splitlines():
        if line.strip() and line[0].isspace():
            if block:
                block.append(line)
            continue
        if block:
            yield block
        block = [line] if line.strip() and not line.startswith("#") else []
    if block:
        yield block


def _required_by(lines: list[str]) -> frozenset[str]:
    """The names in a pin's ``# via`` comment (one line, or one name per following comment line)."""
    names: list[str] = []
    via = False
    for line in lines:
        comment = line.strip().removeprefix("#").strip()
        if not line.strip().startswith("#"):
            continue
        if comment.startswith("via"):
            via = True
            comment = comment.removeprefix("via").strip()
        if via and comment:
            names.append(ROOT if comment.startswith("-r ") else canonicalize_name(comment))
    return frozenset(names)


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.lockfile constraints [LOCK]``: print the lock as hash-free constraints."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "constraints" or len(args) > 2:
        print("usage: python -m infra.lockfile constraints [LOCK]", file=sys.stderr)
        return 2
    sys.stdout.write(constraints(read_lock(Path(args[1]) if len(args) == 2 else LOCK).values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
