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


def test_every_entry_point_imports_without_pillow() -> None:
    """A text model's zip carries no Pillow (infra.packaging.IMAGE_EXTRA_TASKS): every handler must import
    without it, and only an image model's pipeline may need it (the bundle tests prove the same on real zips)."""
    probe = (
        "import sys\n"
        "class NoPillow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'PIL' or name.startswith('PIL.'):\n"
        "            raise ImportError('no Pillow in a text model zip')\n"
        "sys.meta_path.insert(0, NoPillow())\n"
        "from functions.contract.deployment import HANDLERS, WORKER_COMMAND\n"
        "for path in [*HANDLERS.values(), WORKER_COMMAND[-1] + '.main']:\n"
        "    __import__(path.rsplit('.', 1)[0])\n"
        "import functions.inference.pipelines.text, functions.inference.pipelines.generation\n"
        "print('ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "MAAS_MODELS": "", "AWS_DEFAULT_REGION": "eu-west-1"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_the_http_function_never_imports_the_aws_sdk() -> None:
    """boto3 (its clients, botocore's data loaders) costs about a second of a cold start, and the HTTP path reads
    no AWS data (bundled models): its init must not import it (the S3 and SQS functions do). Powertools imports
    botocore's package alone (half a millisecond) to register its user agent; that is fine."""
    probe = (
        "import sys\nimport functions.handlers.http\nprint('boto3' in sys.modules, 'botocore.session' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "MAAS_MODELS": "", "AWS_DEFAULT_REGION": "eu-west-1"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False"]
