"""Least-privilege access to the shared data, one statement set per runtime role of a model.

* the S3 job (S3 function, GPU queue worker) reads the exact version of its inputs, reads and writes
  its output prefix (streamed as multipart uploads) and may list the batch bucket so that a missing
  object reads as 404, not 403 (the runtime tells "not there yet" from "forbidden" that way);
* the SQS reply path (SQS function) writes only below ``<output prefix>replies/`` and sends only to
  the model's own reply queues;
* the HTTP path touches no batch data at all (only its published artifact when read from S3).

Every statement names its actions explicitly (CDK's ``grant_read``/``grant_read_write`` helpers add
wildcard actions such as ``s3:GetObject*`` and ``kms:GenerateDataKey*``, which this project refuses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import IConstruct

from functions.contract.deployment import (
    IDEMPOTENCY_TTL_DAYS,
    JOB_EVENT_BUS,
    REPLIES_DIR,
    RUNS_DIR,
    RuntimeEnvironment,
    service_name,
)
from functions.contract.rules import queue_url
from infra import nag
from infra.config import ModelSpec
from infra.settings import EnvironmentConfig


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
    account: str

    def object_arn(self, bucket_name: str, key_pattern: str) -> str:
        """``arn:<partition>:s3:::<bucket>/<key_pattern>``."""
        return f"arn:{self.partition}:s3:::{bucket_name}/{key_pattern}"

    def bucket_arn(self, bucket_name: str) -> str:
        """``arn:<partition>:s3:::<bucket>``."""
        return f"arn:{self.partition}:s3:::{bucket_name}"

    @staticmethod
    def reply_prefix(spec: ModelSpec) -> str:
        """``<output prefix>replies/``: the only S3 folder SQS replies may be written to."""
        return spec.output_prefix + REPLIES_DIR

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
            self.kms_via_s3("DataKeyViaS3Read", ["kms:Decrypt"]),
        ]

    def s3_job_statements(self, spec: ModelSpec) -> list[iam.PolicyStatement]:
        """An S3 batch job: read the announced version of an input, stream its output and summary.

        * inputs: ``GetObject`` + ``GetObjectVersion`` (the bucket is versioned and the job reads the
          exact ``VersionId`` the event announced);
        * outputs: read (previous summaries) and write, with the multipart actions a streamed output
          needs (``PutObject`` also authorizes CreateMultipartUpload, UploadPart and Complete);
        * ``ListBucket`` on the batch bucket: without it S3 answers 403 instead of 404 for a missing
          key, and the runtime must tell "no summary yet" / "object deleted since the event" apart
          from a refusal. It reveals key names, never contents;
        * the data key, only through S3: ``GenerateDataKey`` to write, ``Decrypt`` to read and to
          complete multipart uploads.

        No ``DeleteObject``: idempotency records live in DynamoDB, not under the output prefix.
        """
        return [
            iam.PolicyStatement(
                sid="ReadOwnInputVersions",
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[self.object_arn(self.batch_bucket_name, f"{spec.input_prefix}*")],
            ),
            iam.PolicyStatement(
                sid="ReadWriteOwnOutputs",
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                resources=[self.object_arn(self.batch_bucket_name, f"{spec.output_prefix}*")],
            ),
            iam.PolicyStatement(
                sid="MissingKeysRead404",
                actions=["s3:ListBucket"],
                resources=[self.bucket_arn(self.batch_bucket_name)],
            ),
            self.kms_via_s3("DataKeyViaS3ReadWrite", ["kms:Decrypt", "kms:GenerateDataKey"]),
        ]

    def chunk_statements(self, spec: ModelSpec) -> list[iam.PolicyStatement]:
        """A chunked S3 job's steps: the S3 job's access, plus deleting its own run files once merged.

        ``DeleteObject`` only below ``<output prefix>.runs/`` (the plan, the chunk outputs, the Map's results):
        never an input, an output or a summary."""
        return [
            *self.s3_job_statements(spec),
            iam.PolicyStatement(
                sid="DeleteOwnRunFiles",
                actions=["s3:DeleteObject"],
                resources=[self.object_arn(self.batch_bucket_name, f"{spec.output_prefix}{RUNS_DIR}*")],
            ),
        ]

    def job_event_statement(self) -> iam.PolicyStatement:
        """Announce finished jobs on the account's default event bus, and nowhere else."""
        return iam.PolicyStatement(
            sid="AnnounceFinishedJobs",
            actions=["events:PutEvents"],
            resources=[f"arn:{self.partition}:events:{self.region}:{self.account}:event-bus/{JOB_EVENT_BUS}"],
        )

    def reply_statements(self, spec: ModelSpec) -> list[iam.PolicyStatement]:
        """SQS replies: put ``<output prefix>replies/<id>.json`` and send to the model's reply queues."""
        return [
            iam.PolicyStatement(
                sid="WriteOwnReplies",
                actions=["s3:PutObject"],
                resources=[self.object_arn(self.batch_bucket_name, f"{self.reply_prefix(spec)}*")],
            ),
            # Decrypt too, as for every writer here (SSE-KMS with a bucket key); through S3 alone it
            # opens nothing, since this role may not read any object.
            self.kms_via_s3("DataKeyViaS3Write", ["kms:Decrypt", "kms:GenerateDataKey"]),
            *self.reply_queue_statements(spec),
        ]

    def reply_queue_statements(self, spec: ModelSpec) -> list[iam.PolicyStatement]:
        """``sqs:SendMessage`` on the catalog's ``reply_queue_arns``, if any."""
        if not spec.deploy.reply_queue_arns:
            return []
        return [
            iam.PolicyStatement(
                sid="ReplyToAllowedQueues",
                actions=["sqs:SendMessage"],
                resources=list(spec.deploy.reply_queue_arns),
            )
        ]

    def worker_statements(self, spec: ModelSpec) -> list[iam.PolicyStatement]:
        """The GPU queue worker runs both: S3 jobs (notifications land in its queue) and SQS replies.

        Its output-prefix write already covers ``<output prefix>replies/``.
        """
        return [*self.s3_job_statements(spec), *self.reply_queue_statements(spec), self.job_event_statement()]

    def idempotency_statement(self, table: dynamodb.ITable) -> iam.PolicyStatement:
        """The four item operations Powertools idempotency performs."""
        return iam.PolicyStatement(
            sid="IdempotencyRecords",
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            resources=[table.table_arn],
        )

    def kms_via_s3(self, sid: str, actions: list[str]) -> iam.PolicyStatement:
        """The data key, usable only through S3 (``kms:ViaService``)."""
        return iam.PolicyStatement(
            sid=sid,
            actions=actions,
            resources=[self.data_key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}},
        )

    def environment(
        self,
        spec: ModelSpec,
        settings: EnvironmentConfig,
        *,
        bundled_at: str,
        table: dynamodb.ITable | None = None,
        announce_jobs: bool = False,
        **runtime: object,
    ) -> RuntimeEnvironment:
        """The runtime's settings for this model (the contract's variable names; ``runtime`` adds more).

        ``table`` is given to the batch consumers only (S3/SQS functions, queue worker): the HTTP path
        keeps no idempotency records and gets neither the table's name nor access to it. ``announce_jobs``: the
        runtimes that finish S3 jobs (S3 and chunk functions, the worker) announce each on the default bus.
        """
        source = getattr(spec.deploy, "model_source", "bundled")
        models = (
            f"s3://{self.artifact_bucket_name}/{spec.artifact_s3_prefix()}"
            if source == "s3"
            else f"{bundled_at}/{spec.name}"
        )
        replies = [f"s3://{self.batch_bucket_name}/{self.reply_prefix(spec)}"]
        replies += [queue_url(arn) for arn in spec.deploy.reply_queue_arns]
        return RuntimeEnvironment(
            models=models,
            batch_bucket=self.batch_bucket_name,
            input_prefix=spec.input_prefix,
            output_prefix=spec.output_prefix,
            reply_allowlist=",".join(replies),
            expected_bucket_owner=self.account,
            idempotency_table=table.table_name if table is not None else None,
            idempotency_ttl_seconds=IDEMPOTENCY_TTL_DAYS * 24 * 3600 if table is not None else None,
            job_event_bus=JOB_EVENT_BUS if announce_jobs else None,
            service_name=service_name(spec.name),
            log_level=settings.log_level,
            **runtime,  # type: ignore[arg-type]
        )
