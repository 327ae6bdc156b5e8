"""A ``lambda`` model: the maas runtime as four functions (HTTP, S3, SQS, chunk) from one zip or image.

Every function is reached through its ``live`` alias (API Gateway, the EventBridge rules, the SQS event source
and the state machine all target the alias, never ``$LATEST``), and every published version is retained, so a
deploy never deletes the version an alias may have to go back to (``maas rollback``). The HTTP alias carries any
provisioned concurrency; the S3 and SQS functions run batch jobs with their own, longer timeout
(``batch_timeout_s``) and a reserved concurrency, so an upload burst cannot starve the HTTP function; the chunk
function (the steps of a job too large for the S3 function: plan, each chunk, merge) has the same timeout and
memory, and the state machine's MaxConcurrency caps it. All four share one code asset (so one upload or one
image), arm64 by default, and each has its own role that holds only the statements
:class:`~infra.constructs.data_access.DataAccess` hands it: the HTTP function no batch data, the S3 function its
input/output prefixes, the chunk function those plus deleting its own run files, the SQS function only its reply
folder and reply queues; the idempotency table goes to the batch functions only.

A model whose responses stream (text generation) ships as an image whose HTTP function is the image's ``stream``
target: the Lambda Web Adapter in ``response_stream`` mode in front of the same app under uvicorn, invoked by API
Gateway with response streaming. Its S3 and SQS functions run the ``runtime`` target's handlers as for any image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from functions.contract.catalog import LambdaDeploy
from functions.contract.deployment import (
    HANDLERS,
    LAMBDA_WEB_ADAPTER_ENVIRONMENT,
    LIVE_ALIAS,
    STREAM_SERVER_COMMAND,
    TASK_ROOT_ARTIFACTS,
    function_tags,
    version_description,
)
from infra import nag
from infra.config import ModelSpec
from infra.constructs.common import function_logs_and_role
from infra.constructs.data_access import DataAccess
from infra.limits import LAMBDA_PYTHON_VERSION
from infra.settings import EnvironmentConfig

_LOG_LEVELS = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
}


def python_runtime() -> lambda_.Runtime:
    """The managed Python runtime matching :data:`infra.limits.LAMBDA_PYTHON_VERSION`."""
    runtime: lambda_.Runtime = getattr(lambda_.Runtime, "PYTHON_" + LAMBDA_PYTHON_VERSION.replace(".", "_"))
    return runtime


class LambdaEndpoint(Construct):
    """The model's HTTP, S3 and SQS functions with least-privilege roles and their own log groups."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ModelSpec,
        settings: EnvironmentConfig,
        package_dir: Path,
        access: DataAccess,
        table: dynamodb.ITable,
        chunk_bytes: int,
    ) -> None:
        super().__init__(scope, construct_id)
        if not isinstance(spec.deploy, LambdaDeploy):
            raise TypeError(f"model {spec.name!r} is not a lambda target")
        self._spec, self._settings, self._deploy = spec, settings, spec.deploy
        self._package_dir = package_dir
        http_environment = access.environment(
            spec, settings, bundled_at=TASK_ROOT_ARTIFACTS, request_timeout_s=float(spec.deploy.timeout_s)
        ).variables()
        if spec.streams:
            http_environment = {**http_environment, **LAMBDA_WEB_ADAPTER_ENVIRONMENT}
        batch_environment = access.environment(spec, settings, bundled_at=TASK_ROOT_ARTIFACTS, table=table).variables()
        job_environment = access.environment(spec, settings, bundled_at=TASK_ROOT_ARTIFACTS, table=table,
                                             announce_jobs=True, chunk_bytes=chunk_bytes).variables()
        artifact = access.artifact_statements(spec) if spec.deploy.model_source == "s3" else []
        idempotency = access.idempotency_statement(table)
        self.http_function = self._function(
            "Http",
            "http",
            timeout_s=self._deploy.timeout_s,
            memory_mb=self._deploy.memory_mb,
            reserved=self._deploy.reserved_concurrency,
            environment=http_environment,
            statements=artifact,
        )
        batch_reserved = self._deploy.batch_reserved_concurrency
        batch_reserved = settings.batch_reserved_concurrency if batch_reserved is None else batch_reserved
        # The batch functions get their own, longer timeout (batch_timeout_s): a job streams a whole
        # object through the model, far beyond what an API request may take.
        batch_memory = self._deploy.batch_memory_mb or self._deploy.memory_mb
        announce = access.job_event_statement()
        s3_statements = [*artifact, *access.s3_job_statements(spec), idempotency, announce]
        self.s3_function = self._function(
            "S3Jobs",
            "s3",
            timeout_s=self._deploy.batch_timeout_s,
            memory_mb=batch_memory,
            environment=job_environment,
            statements=s3_statements,
            reserved=batch_reserved or None,
        )
        chunk_statements = [*artifact, *access.chunk_statements(spec), idempotency, announce]
        self.chunk_function = self._function(
            "Chunks",
            "chunk",
            timeout_s=self._deploy.batch_timeout_s,
            memory_mb=batch_memory,
            environment=job_environment,
            statements=chunk_statements,
        )
        sqs_statements = [*artifact, *access.reply_statements(spec), idempotency]
        self.sqs_function = self._function(
            "SqsJobs",
            "sqs",
            timeout_s=self._deploy.batch_timeout_s,
            memory_mb=batch_memory,
            environment=batch_environment,
            statements=sqs_statements,
            reserved=batch_reserved or None,
        )
        self.http_alias = lambda_.Alias(
            self,
            "Live",
            alias_name=LIVE_ALIAS,
            version=self.http_function.current_version,
            provisioned_concurrent_executions=self._deploy.provisioned_concurrency or None,
        )
        self.s3_alias = lambda_.Alias(
            self, "S3JobsLive", alias_name=LIVE_ALIAS, version=self.s3_function.current_version
        )
        self.sqs_alias = lambda_.Alias(
            self, "SqsJobsLive", alias_name=LIVE_ALIAS, version=self.sqs_function.current_version
        )
        self.chunk_alias = lambda_.Alias(
            self, "ChunksLive", alias_name=LIVE_ALIAS, version=self.chunk_function.current_version
        )
        nag.acknowledge(
            self,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords do not support resource-level permissions",
        )
        access.acknowledge_prefix_wildcards(self, [*s3_statements, *sqs_statements, *chunk_statements])
        nag.acknowledge(
            self,
            "AwsSolutions-L1",
            f"Python {LAMBDA_PYTHON_VERSION} is pinned: the zip's native wheels (onnxruntime, tokenizers, "
            "numpy) are built for this ABI by infra.build_deps; bump both together",
        )

    @property
    def functions(self) -> Sequence[lambda_.Function]:
        """All four functions, HTTP first."""
        return (self.http_function, self.s3_function, self.sqs_function, self.chunk_function)

    @property
    def aliases(self) -> Sequence[lambda_.Alias]:
        """The ``live`` alias of each function, HTTP first: what callers and event sources invoke."""
        return (self.http_alias, self.s3_alias, self.sqs_alias, self.chunk_alias)

    def _code(self, kind: str) -> lambda_.Code:
        if self._spec.package == "zip":
            return lambda_.Code.from_asset(str(self._package_dir))
        platform = (
            ecr_assets.Platform.LINUX_ARM64 if self._deploy.architecture == "arm64" else ecr_assets.Platform.LINUX_AMD64
        )
        build_args = {"MODEL_NAME": self._spec.name, "PYTHON_VERSION": LAMBDA_PYTHON_VERSION}
        if kind == "http" and self._spec.streams:
            # the adapter runs the app under uvicorn: the entry point is the server, no handler
            return lambda_.Code.from_asset_image(
                str(self._package_dir),
                entrypoint=list(STREAM_SERVER_COMMAND),
                platform=platform,
                build_args=build_args,
                target="stream",
            )
        return lambda_.Code.from_asset_image(
            str(self._package_dir), cmd=[HANDLERS[kind]], platform=platform, build_args=build_args, target="runtime"
        )

    def _function(
        self,
        construct_id: str,
        kind: str,
        *,
        timeout_s: int,
        memory_mb: int,
        environment: Mapping[str, str],
        statements: Sequence[iam.PolicyStatement],
        reserved: int | None = None,
    ) -> lambda_.Function:
        log_group, role = function_logs_and_role(
            self,
            construct_id,
            self._settings,
            description=f"maas {self._spec.name} {kind} function",
            statements=statements,
        )
        image = self._spec.package == "image"
        handler = HANDLERS[kind]
        function = lambda_.Function(
            self,
            construct_id,
            description=f"maas {self._spec.name} ({self._spec.task}) {kind} handler",
            code=self._code(kind),
            handler=lambda_.Handler.FROM_IMAGE if image else handler,
            runtime=lambda_.Runtime.FROM_IMAGE if image else python_runtime(),
            architecture=(
                lambda_.Architecture.ARM_64 if self._deploy.architecture == "arm64" else lambda_.Architecture.X86_64
            ),
            memory_size=memory_mb,
            timeout=cdk.Duration.seconds(timeout_s),
            ephemeral_storage_size=cdk.Size.mebibytes(self._deploy.ephemeral_storage_mb),
            reserved_concurrent_executions=reserved,
            environment=dict(environment),
            role=role,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=_LOG_LEVELS[self._settings.log_level],
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            tracing=lambda_.Tracing.ACTIVE,
            recursive_loop=lambda_.RecursiveLoop.TERMINATE,
            # A deploy publishes a new version and moves the alias; the old version stays to roll back to.
            current_version_options=lambda_.VersionOptions(
                removal_policy=cdk.RemovalPolicy.RETAIN,
                description=version_description(self._spec.artifact.version),
            ),
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if self._deploy.snap_start else None,
        )
        for key, value in function_tags(self._settings.stage, self._spec.name, kind).items():
            cdk.Tags.of(function).add(key, value)
        return function
