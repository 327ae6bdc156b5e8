"""Small helpers every construct uses to turn environment settings into CDK values."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_logs as logs

from infra.settings import LOG_RETENTION_DAYS, EnvironmentConfig

# logs.RetentionDays lists its members in the same order as CloudWatch's allowed day counts.
_RETENTION = dict(zip(LOG_RETENTION_DAYS, [m for m in logs.RetentionDays if m.name != "INFINITE"], strict=True))


def log_retention(settings: EnvironmentConfig) -> logs.RetentionDays:
    """The CDK retention value for ``settings.log_retention_days``."""
    return _RETENTION[settings.log_retention_days]


def data_removal_policy(settings: EnvironmentConfig) -> cdk.RemovalPolicy:
    """RETAIN buckets, keys and log groups unless the stage says its data may go with the stacks."""
    return cdk.RemovalPolicy.RETAIN if settings.retain_data else cdk.RemovalPolicy.DESTROY
