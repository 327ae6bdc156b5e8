"""The emulated arm64 Lambda Python (maas_dev.emulation): a missing or broken one is refused with how to make it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from maas_dev import emulation


def test_a_folder_without_it_is_refused_with_the_command_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(emulation.EmulationUnavailable, match=r"python -m maas_dev\.emulation --out"):
        emulation.find(tmp_path)


def test_an_emulator_that_does_not_run_python_313_for_aarch64_is_refused(tmp_path: Path) -> None:
    """A stand-in 'QEMU' that runs the host's own Python: it answers, but not as aarch64 CPython 3.13."""
    import sys

    fake = tmp_path / "qemu-aarch64"
    fake.write_text(f'#!/bin/sh\nwhile [ "${{1##*/}}" != python3.13 ]; do shift; done\nshift\nexec {sys.executable} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    python = tmp_path / "root" / "usr" / "bin" / "python3.13"
    python.parent.mkdir(parents=True)
    python.write_text("")
    with pytest.raises(emulation.EmulationUnavailable, match="did not run"):
        emulation.find(tmp_path)


def test_the_environment_variable_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(emulation.ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(emulation.EmulationUnavailable, match="elsewhere"):
        emulation.find()
