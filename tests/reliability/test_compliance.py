"""Findings of the static gates, as figures: cdk-nag (AwsSolutions), cfn-lint and pip-audit.

The gates themselves live with their owners (tests/infra/test_compliance.py fails on any unacknowledged
cdk-nag finding or cfn-lint error); this module counts what they see for docs/reliability.md, and runs
pip-audit over the installed environment (it needs PyPI's JSON API; without it the test is skipped).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections import Counter
from importlib import metadata
from pathlib import Path

import pytest

from tests.reliability.conftest import OUT_DIR, REPO_ROOT

pytestmark = pytest.mark.slow

# Vulnerabilities knowingly accepted: id → reason (none today). Each must say why it cannot reach the runtime.
ACKNOWLEDGED: dict[str, str] = {}


def test_cdk_nag_and_cfn_lint_findings(tmp_path, record):
    pytest.importorskip("aws_cdk")
    from cfnlint.api import ManualArgs, lint_file

    from tests.infra.conftest import MB, REGION, synthesize, write_manifest
    from tests.infra.test_compliance import ALLOWED_WARNINGS

    with (REPO_ROOT / "catalog.toml").open("rb") as handle:
        catalog = tomllib.load(handle)["models"]
    for name, entry in catalog.items():
        write_manifest(tmp_path / "artifacts", name, entry["task"], {"model.onnx": 23 * MB, "tokenizer.json": 700_000})
    app = synthesize(tmp_path, {"artifactsDir": str(tmp_path / "artifacts")})
    plugins = {p["pluginName"]: p for p in app.validation_report()["pluginReports"]}
    nag = plugins["AwsSolutions"]
    unacknowledged = [v["ruleName"] for v in nag["violations"]]
    acknowledged = nag.get("suppressedViolations", [])
    templates = sorted(app.outdir.glob("*.template.json"))
    lint = [match.rule.id for t in templates for match in lint_file(t, config=ManualArgs(regions=[REGION]))]
    errors = [rule for rule in lint if rule.startswith("E")]
    warnings = [rule for rule in lint if rule.startswith("W") and rule not in ALLOWED_WARNINGS]
    by_rule = Counter(a["ruleName"].split("[")[0] for a in acknowledged)
    record(
        "compliance",
        "cdk-nag AwsSolutions (default catalog)",
        {
            "stacks": len(templates),
            "unacknowledged": len(unacknowledged),
            "acknowledged_with_reason": len(acknowledged),
            "acknowledged_by_rule": dict(sorted(by_rule.items())),
        },
    )
    record(
        "compliance",
        "cfn-lint (default catalog)",
        {
            "templates": len(templates),
            "errors": len(errors),
            "unexpected_warnings": len(warnings),
            "allowed_warnings": sorted({r for r in lint if r in ALLOWED_WARNINGS}),
        },
        f"allowed: {', '.join(sorted(ALLOWED_WARNINGS))} (CDK-generated; see tests/infra/test_compliance.py)",
    )
    assert app.error is None and unacknowledged == [] and errors == [] and warnings == []


def _advisory_data_missing() -> str | None:
    """Why pip-audit cannot judge this environment here, or None when PyPI's JSON API has the data."""
    version = metadata.version("numpy")
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/numpy/{version}/json", timeout=10) as response:
            return None if response.status == 200 else f"PyPI's JSON API answered {response.status}"
    except urllib.error.HTTPError as exc:  # reachable, but it has no record of the installed versions
        return f"PyPI's JSON API has no record of the installed versions (numpy {version}: HTTP {exc.code})"
    except (urllib.error.URLError, TimeoutError, OSError):
        return "PyPI's JSON API is unreachable from this host"


def test_pip_audit_finds_no_known_vulnerability(record):
    missing = _advisory_data_missing()
    if missing is not None:
        record("compliance", "pip-audit", {"status": "not run here"}, missing)
        pytest.skip(f"pip-audit needs PyPI's vulnerability data: {missing}")
    out = OUT_DIR / "pip-audit.json"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "pip-audit"), "--local", "--skip-editable", "--progress-spinner",
               "off", "--format", "json", "--output", str(out)]  # fmt: skip
    for vuln in ACKNOWLEDGED:
        command += ["--ignore-vuln", vuln]
    subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    report = json.loads(out.read_text())
    audited = [d for d in report["dependencies"] if "skip_reason" not in d]
    found = sorted(f"{d['name']} {d['version']}: {v['id']}" for d in audited for v in d.get("vulns", []))
    record("compliance", "pip-audit (installed environment)",
           {"packages_audited": len(audited), "skipped": len(report["dependencies"]) - len(audited),
            "vulnerabilities": len(found), "acknowledged": len(ACKNOWLEDGED)}, "; ".join(found))  # fmt: skip
    assert audited and found == [], found
