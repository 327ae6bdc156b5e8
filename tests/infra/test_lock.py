"""GIVEN functions/requirements.lock THEN it is what `make lock` writes from functions/requirements.txt
today, it pins one version per package (the same for the tests' Python 3.11 and Lambda's 3.13) with
hashes, and the environment these tests run in holds exactly those versions (`make install`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement

from infra import lockfile
from infra.lockfile import LOCK
from infra.packaging import REQUIREMENTS, requirement_lines
from tests.infra.conftest import REPO


def test_lock_pins_every_runtime_requirement_within_its_range() -> None:
    pins = lockfile.read_lock(LOCK)  # one version per package, each with hashes, or it raises
    asked = {Requirement(line).name.lower(): Requirement(line) for line in requirement_lines(REQUIREMENTS.read_text())}
    roots = {name for name, pin in pins.items() if lockfile.ROOT in pin.required_by}
    assert roots == set(asked), "functions/requirements.txt changed since the lock: run `make lock`"
    for name, requirement in asked.items():
        assert requirement.specifier.contains(pins[name].version), f"{name} {pins[name].version}: run `make lock`"
    # Every other pin is there because a locked package needs it.
    assert all(pin.required_by <= {lockfile.ROOT, *pins} and pin.required_by for pin in pins.values())


def test_tests_and_lambda_run_the_same_versions() -> None:
    # One version per package (read_lock refuses two), and no marker that keeps a package from one of
    # the tests' Python (3.11, x86_64) and Lambda's (3.13, arm64 or x86_64) but not the other.
    pins = lockfile.read_lock(LOCK)
    tests = lockfile.lambda_environment("x86_64", "3.11")
    for arch in lockfile.MACHINES:
        on_lambda = lockfile.lambda_environment(arch, "3.13")
        assert [name for name, pin in pins.items() if pin.applies(tests) != pin.applies(on_lambda)] == []


@pytest.mark.slow
def test_lock_is_what_make_lock_writes_today(tmp_path: Path) -> None:
    """Re-run `make lock` (uv, network: the package index) into a copy: already pinned versions are kept
    while they still fit, so only a change of functions/requirements.txt (or a yanked pin) moves it."""
    copy = tmp_path / "requirements.lock"
    shutil.copyfile(LOCK, copy)
    command = ["make", "--silent", "lock", f"LOCK={copy}", f"BIN={Path(sys.executable).parent}"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    assert copy.read_text() == LOCK.read_text(), "functions/requirements.lock is stale: run `make lock`"


def test_the_test_environment_holds_the_locked_versions() -> None:
    environment = {key: str(value) for key, value in default_environment().items()}
    wrong = {}
    for name, pin in lockfile.read_lock(LOCK).items():
        if not pin.applies(environment):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != pin.version:
            wrong[name] = f"{installed} (locked {pin.version})"
    assert not wrong, f"this environment drifted from functions/requirements.lock, run `make install`: {wrong}"


def test_constraints_are_the_lock_without_hashes() -> None:
    pins = lockfile.read_lock(LOCK)
    result = subprocess.run(
        [sys.executable, "-m", "infra.lockfile", "constraints"], cwd=REPO, capture_output=True, text=True, check=True
    )
    constraints = [Requirement(line) for line in result.stdout.splitlines()]
    assert [(c.name, str(c.specifier), str(c.marker or "")) for c in constraints] == [
        (name, f"=={pin.version}", str(Marker(pin.marker)) if pin.marker else "") for name, pin in pins.items()
    ]


def test_select_leaves_out_what_only_the_left_out_packages_need() -> None:
    pins = lockfile.read_lock(LOCK)
    kept = lockfile.select(pins, leave_out=["huggingface-hub"])
    hub_only = {"huggingface-hub", "hf-xet", "fsspec", "filelock", "tqdm", "pyyaml", "click"}
    assert hub_only <= set(pins) and not hub_only & set(kept)
    # Shared with packages the runtime keeps: still there.
    assert {"packaging", "typing-extensions", "idna", "anyio", "tokenizers"} <= set(kept)
    assert set(lockfile.select(pins)) == set(pins)


def test_render_evaluates_markers_for_the_target_and_keeps_every_hash(tmp_path: Path) -> None:
    pins = lockfile.read_lock(LOCK)
    environment = lockfile.lambda_environment("arm64", "3.13")
    rendered = tmp_path / "arm64.txt"
    rendered.write_text(lockfile.render(pins.values(), environment))
    assert ";" not in rendered.read_text()  # pip would evaluate markers for the host, not for --platform
    back = lockfile.read_lock(rendered)
    assert set(back) == {name for name, pin in pins.items() if pin.applies(environment)}
    assert "colorama" not in back and "hf-xet" in back  # Windows-only; aarch64 wheels exist
    assert all(pin.version == pins[name].version and pin.hashes == pins[name].hashes for name, pin in back.items())
