"""Small helpers every construct uses to turn environment settings into CDK values."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.settings import LOG_RETENTION_DAYS, EnvironmentConfig

# logs.RetentionDays lists its members in the same order as CloudWatch's allowed day counts.
_RETENTION = dict(zip(LOG_RETENTION_DAYS, [m for m in logs.RetentionDays if m.name != "INFINITE"], strict=True))


def log_retention(settings: EnvironmentConfig) -> logs.RetentionDays:
    """The CDK retention value for ``settings.log_retention_days``."""
    return _RETENTION[settings.log_retention_days]


def data_removal_policy(settings: EnvironmentConfig) -> cdk.RemovalPolicy:
    """RETAIN buckets, keys and log groups unless the stage says its data may go with the stacks."""
    return cdk.RemovalPolicy.RETAIN if settings.retain_data else cdk.RemovalPolicy.DESTROY


def function_logs_and_role(
    scope: Construct,
    construct_id: str,
    settings: EnvironmentConfig,
    *,
    description: str,
    statements: Sequence[iam.PolicyStatement] = (),
) -> tuple[logs.LogGroup, iam.Role]:
    """A Lambda function's own log group (``<id>Logs``) and role (``<id>Role``): it may write to that log group,
    and hold ``statements``, nothing else."""
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        retention=log_retention(settings),
        removal_policy=data_removal_policy(settings),
    )
    role = iam.Role(
        scope, f"{construct_id}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=description
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="OwnLogGroup",
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        )
    )
    for statement in statements:
        role.add_to_policy(statement)
    return log_group, role
