"""GIVEN the synthesized apps THEN cdk-nag v3's AwsSolutions pack (a CDK validation plugin) reports no
unacknowledged finding, every acknowledgment carries a specific reason, and cfn-lint finds no error in
any template (and no warning outside the two CDK produces by design)."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint_file

from tests.infra.conftest import REGION, Synth

# W3005: CDK adds an explicit DependsOn next to a GetAtt (roles before functions).
# W3010: the AZs are configured (availabilityZones) so synth never looks them up; CDK itself flags this one.
ALLOWED_WARNINGS = {"W3005", "W3010"}


@pytest.fixture(scope="module", params=["default_app", "variant_app"])
def app(request: pytest.FixtureRequest) -> Synth:
    synth: Synth = request.getfixturevalue(request.param)
    return synth


def test_cdk_nag_awssolutions_has_no_unacknowledged_findings(app: Synth) -> None:
    report = app.validation_report()
    findings = [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]
    assert app.error is None and not findings, "\n".join(findings) or str(app.error)


def test_cdk_nag_is_really_registered(tmp_path: Path) -> None:
    # Guard against a silently disabled plugin: the same registration fails a plain unencrypted queue.
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe", env=cdk.Environment(account="123456789012", region=REGION))
    sqs.Queue(stack, "Plain", encryption=sqs.QueueEncryption.UNENCRYPTED)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    rules = {
        v["ruleName"]
        for p in json.loads((tmp_path / "validation-report.json").read_text())["pluginReports"]
        for v in p["violations"]
    }
    assert {"AwsSolutions-SQS2", "AwsSolutions-SQS3", "AwsSolutions-SQS4"} <= rules


def test_every_acknowledgment_is_reported_with_a_specific_reason(app: Synth) -> None:
    plugins = {p["pluginName"]: p for p in app.validation_report()["pluginReports"]}
    nag = plugins["AwsSolutions"]
    assert nag["conclusion"] == "success" and not nag["violations"]
    acknowledged = nag["suppressedViolations"]
    assert acknowledged, "expected acknowledged findings (e.g. X-Ray's Resource::*)"
    for finding in acknowledged:
        assert finding["ruleName"].startswith("AwsSolutions-"), finding
        reason = finding["reason"]
        assert len(reason) >= 25 and "todo" not in reason.lower(), finding


def test_cfn_lint_finds_no_errors(app: Synth) -> None:
    problems = []
    for template in sorted(app.outdir.glob("*.template.json")):
        for match in lint_file(template, config=ManualArgs(regions=[REGION])):
            rule = match.rule.id
            if rule.startswith("E") or (rule.startswith("W") and rule not in ALLOWED_WARNINGS):
                problems.append(f"{template.name}: {rule} {str(match.message)[:300]}")
    assert not problems, "\n".join(problems)
