"""cdk-nag v3 acknowledgments: one call per finding, each with the reason a reviewer would accept.

cdk-nag v3 runs as a CDK validation plugin (``Validations.of(app).add_plugins(AwsSolutionsChecks(app))``)
and reads acknowledgments recorded with ``Validations.of(construct).acknowledge(...)``. Findings that
carry a detail (e.g. ``AwsSolutions-IAM5[Resource::*]``) are acknowledged one detail at a time.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

_MIN_REASON = 25
PLUGIN = "AwsSolutions"


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``construct`` (and its children) with a specific reason."""
    if not rule_id.startswith("AwsSolutions-"):
        raise ValueError(f"{rule_id!r} is not an AwsSolutions rule id")
    if len(reason.strip()) < _MIN_REASON:
        raise ValueError(f"acknowledging {rule_id} needs a specific reason, not {reason!r}")
    # "<plugin>::<rule>" is CDK's validation id: the finding then shows in validation-report.json as
    # acknowledged, with its reason (an audit trail), instead of being dropped silently.
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{PLUGIN}::{rule_id}", reason=reason))
