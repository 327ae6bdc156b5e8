"""Least-privilege access to the shared data: one model reads its own prefixes and writes only its outputs.

Every statement names its actions explicitly (CDK's ``grant_read``/``grant_read_write`` helpers add
wildcard actions such as ``s3:GetObject*`` and ``kms:GenerateDataKey*``, which this project refuses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import IConstruct

from infra import nag
from infra.config import ModelSpec
from infra.guards import QUEUE_ARN_RE
from infra.settings import EnvironmentConfig

CACHE_DIR = "/tmp/maas-artifacts"


def queue_url(arn: str) -> str:
    """The SQS queue URL for a queue ARN (``MAAS_REPLY_ALLOWLIST`` holds URLs, IAM holds ARNs)."""
    match = QUEUE_ARN_RE.fullmatch(arn)
    if match is None:
        raise ValueError(f"{arn!r} is not an SQS queue ARN")
    region, account, name = match.groups()
    return f"https://sqs.{region}.amazonaws.com/{account}/{name}"


@dataclass(frozen=True)
class DataAccess:
    """The shared buckets and key as seen from one model stack, and the statements it may hold on them.

    Buckets are addressed by their fixed names (see ``EnvironmentConfig.bucket_name``), so every
    object ARN below is a plain string a reviewer can read, and that cdk-nag reports verbatim.
    """

    artifact_bucket_name: str
    batch_bucket_name: str
    data_key: kms.IKey
    partition: str
    region: str

    def object_arn(self, bucket_name: str, key_pattern: str) -> str:
        """``arn:<partition>:s3:::<bucket>/<key_pattern>``."""
        return f"arn:{self.partition}:s3:::{bucket_name}/{key_pattern}"

    def acknowledge_prefix_wildcards(self, scope: IConstruct, statements: Sequence[iam.PolicyStatement]) -> None:
        """Acknowledge cdk-nag IAM5 for each ``<prefix>*`` object ARN: the ``*`` only spans the model's prefix."""
        partition = "<AWS::Partition>" if cdk.Token.is_unresolved(self.partition) else self.partition
        for statement in statements:
            for resource in statement.resources:
                if resource.startswith(f"arn:{self.partition}:s3:::") and resource.endswith("*"):
                    shown = resource.replace(f"arn:{self.partition}:", f"arn:{partition}:", 1)
                    nag.acknowledge(
                        scope,
                        f"AwsSolutions-IAM5[Resource::{shown}]",
                        "Object-level access, wildcard only below this model's own key prefix",
                    )

    def artifact_statements(self, spec: ModelSpec) -> list[iam.PolicyStatement]:
        """Read this model's published version, and nothing else in the artifact bucket."""
        return [
            iam.PolicyStatement(
                sid="ReadOwnArtifact",
                actions=["s3:GetObject"],
                resources=[self.object_arn(self.artifact_bucket_name, f"{spec.artifact_s3_prefix()}/*")],
            ),
            self._kms_via_s3(write=False),
        ]

    def batch_statements(self, spec: ModelSpec) -> list[iam.PolicyStatement]:
        """Read this model's inputs (and its own results), write only under its output prefix."""
        statements = [
            iam.PolicyStatement(
                sid="ReadOwnInputsAndResults",
                actions=["s3:GetObject"],
                resources=[
                    self.object_arn(self.batch_bucket_name, f"{spec.input_prefix}*"),
                    self.object_arn(self.batch_bucket_name, f"{spec.output_prefix}*"),
                ],
            ),
            iam.PolicyStatement(
                sid="WriteOwnOutputs",
                actions=["s3:PutObject"],
                resources=[self.object_arn(self.batch_bucket_name, f"{spec.output_prefix}*")],
            ),
            self._kms_via_s3(write=True),
        ]
        if spec.deploy.reply_queue_arns:
            statements.append(
                iam.PolicyStatement(
                    sid="ReplyToAllowedQueues",
                    actions=["sqs:SendMessage"],
                    resources=list(spec.deploy.reply_queue_arns),
                )
            )
        return statements

    def idempotency_statement(self, table: dynamodb.ITable) -> iam.PolicyStatement:
        """The four item operations Powertools idempotency performs."""
        return iam.PolicyStatement(
            sid="IdempotencyRecords",
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            resources=[table.table_arn],
        )

    def _kms_via_s3(self, *, write: bool) -> iam.PolicyStatement:
        actions = ["kms:Decrypt", "kms:GenerateDataKey"] if write else ["kms:Decrypt"]
        return iam.PolicyStatement(
            sid="DataKeyViaS3Write" if write else "DataKeyViaS3Read",
            actions=actions,
            resources=[self.data_key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}},
        )

    def environment(
        self, spec: ModelSpec, settings: EnvironmentConfig, *, table: dynamodb.ITable, bundled_at: str
    ) -> Mapping[str, str]:
        """The runtime's ``MAAS_*`` / Powertools settings for this model."""
        source = getattr(spec.deploy, "model_source", "bundled")
        models = (
            f"s3://{self.artifact_bucket_name}/{spec.artifact_s3_prefix()}"
            if source == "s3"
            else f"{bundled_at}/{spec.name}"
        )
        replies = [f"s3://{self.batch_bucket_name}/{spec.output_prefix}"]
        replies += [queue_url(arn) for arn in spec.deploy.reply_queue_arns]
        return {
            "MAAS_MODELS": models,
            "MAAS_CACHE_DIR": CACHE_DIR,
            "MAAS_BATCH_BUCKET": self.batch_bucket_name,
            "MAAS_INPUT_PREFIX": spec.input_prefix,
            "MAAS_OUTPUT_PREFIX": spec.output_prefix,
            "MAAS_REPLY_ALLOWLIST": ",".join(replies),
            "MAAS_IDEMPOTENCY_TABLE": table.table_name,
            "POWERTOOLS_SERVICE_NAME": f"maas-{spec.name}",
            "POWERTOOLS_METRICS_NAMESPACE": "maas",
            "LOG_LEVEL": settings.log_level,
        }
