"""The rooms keep their doors: import rules (pyproject's [tool.importlinter]) hold on the whole tree.

The contracts: the runtime imports no build, infra or dev library; the contract module imports only pydantic;
infra reads the runtime only through the contract; the build never imports dev tools; the runtime is
layered (handlers > app and batch paths > protocols > inference > settings/telemetry > errors > contract);
the protocols are independent; and no package imports its siblings in a cycle.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_rules_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency (pip install -e '.[dev]')"
    result = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_cycle_would_be_caught(tmp_path: Path) -> None:
    """GIVEN a copy of the runtime with two modules importing each other THEN the cycle rule breaks."""
    shutil.copytree(REPO / "functions", tmp_path / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "functions" / "inference" / "zz_a.py").write_text("from functions.inference import zz_b\n")
    (tmp_path / "functions" / "inference" / "zz_b.py").write_text("from functions.inference import zz_a\n")
    config = tmp_path / "importlinter.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    functions\n\n[importlinter:contract:cycles]\n"
        "name = no cycles\ntype = acyclic_siblings\nancestors =\n    functions\n"
    )
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint
    result = subprocess.run(
        [lint, "--no-cache", "--config", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0 and "BROKEN" in result.stdout
