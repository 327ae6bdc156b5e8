"""How a deployed runtime is started and configured: entry points, paths and environment variables.

infra writes these into the template (handler names, container commands, environment); the runtime
reads the same names (``functions.settings.Settings`` reads every ``MAAS_*`` variable of
:class:`RuntimeEnvironment`). One definition, so a rename cannot leave the two out of step.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "MAAS_"

# Lambda entry points, one per event source; all three live in the same package.
HANDLERS = {
    "http": "functions.handlers.http.handler",
    "s3": "functions.handlers.s3.handler",
    "sqs": "functions.handlers.sqs.handler",
    # the Step Functions steps of a chunked S3 job (plan, chunk, merge) and its failure notice
    "chunk": "functions.handlers.chunk.handler",
}
# Every function is invoked through this alias; `maas rollback` moves it to an earlier, retained version.
LIVE_ALIAS = "live"


def function_tags(stage: str, model: str, kind: str) -> dict[str, str]:
    """The tags that find a model's functions in an account (``maas rollback`` looks them up by these)."""
    return {"maas:stage": stage, "maas:model": model, "maas:function": kind}


def version_description(artifact_version: str) -> str:
    """A published Lambda version's description: the artifact version it serves (``maas rollback --to``)."""
    return f"maas artifact {artifact_version}"


# Bearer keys: a Lambda REQUEST authorizer (its own small zip: stdlib and boto3 only) checks `Authorization: Bearer
# <key>` (or `x-api-key`) against the stage's key table, where keys are stored only as hashes, and answers with the
# tenant's usage-plan key so usage plans still throttle and meter per tenant. `maas keys` manages the table.
AUTHORIZER_HANDLER = "functions.handlers.authorizer.handler"
API_KEYS_TABLE_ENV = "MAAS_API_KEYS_TABLE"  # the authorizer's one setting: the table it reads


def api_keys_table_name(stage: str) -> str:
    """The stage's key table (a fixed name, so `maas keys --stage <s>` finds it without a lookup)."""
    return f"maas-{stage}-api-keys"


def tenant_key_name(stage: str, tenant: str) -> str:
    """The name of a tenant's API Gateway key: what its usage plan meters (the authorizer returns its value)."""
    return f"maas-{stage}-{tenant}"


# Streaming generation on Lambda: the AWS Lambda Web Adapter (an extension in the image, `response_stream` mode)
# turns each API Gateway event into an HTTP request to the same ASGI app under uvicorn on loopback, and streams
# the app's response back through Lambda's response-streaming invoke. What the adapter needs is set on the
# function (names and values here, so the template, the image and the local gateway agree).
STREAM_PORT = 8080
STREAM_SERVER_COMMAND = (
    "python3", "-m", "uvicorn", "functions.handlers.http:app", "--host", "127.0.0.1", "--port", str(STREAM_PORT),
    "--no-access-log", "--timeout-graceful-shutdown", "1",
)  # fmt: skip
LAMBDA_WEB_ADAPTER_ENVIRONMENT = {
    "AWS_LWA_INVOKE_MODE": "response_stream",
    "AWS_LWA_PORT": str(STREAM_PORT),
    "AWS_LWA_READINESS_CHECK_PATH": "/v2/health/ready",
    # a model that loads past Lambda's 10 s init keeps loading into the first invocation instead of failing init
    "AWS_LWA_ASYNC_INIT": "true",
    "PYTHONPATH": "/var/task",
}
# The header through which the adapter hands the app the Lambda context (JSON; "deadline" in epoch milliseconds).
LAMBDA_CONTEXT_HEADER = "x-amzn-lambda-context"

# The GPU container: the same ASGI app under uvicorn, and the queue worker.
PORT = 8080
HEALTH_PATH = "/v2/health/ready"
# Keep-alive above API Gateway's connection reuse through the VPC link, so idle reuse never hits a close.
SERVER_COMMAND = (
    "uvicorn", "functions.handlers.http:app", "--host", "0.0.0.0", "--port", str(PORT), "--timeout-keep-alive", "75",
)  # fmt: skip
WORKER_COMMAND = ("python", "-m", "functions.handlers.worker")

TASK_ROOT_ARTIFACTS = "/var/task/artifacts"  # Lambda: the zip's root, and the image's ${LAMBDA_TASK_ROOT}
APP_ROOT = "/app"  # the GPU image's WORKDIR (docker/gpu.Dockerfile)
CACHE_DIR = "/tmp/maas-artifacts"  # where artifacts read from S3 are cached (Lambda's writable /tmp)
# Below a model's output prefix: SQS replies may be written to REPLIES_DIR only; the S3 fallback
# idempotency store keeps its records in IDEMPOTENCY_DIR (infra deploys DynamoDB instead and expires it).
REPLIES_DIR = "replies/"
IDEMPOTENCY_DIR = ".idempotency/"
IDEMPOTENCY_TTL_DAYS = 7
# A chunked S3 job's working files (plan, chunk outputs, the Map's results) live below <output prefix>RUNS_DIR;
# the merge deletes them, and a lifecycle rule expires what a run abandoned after RUNS_TTL_DAYS.
RUNS_DIR = ".runs/"
RUNS_TTL_DAYS = 14  # Step Functions keeps an execution redrivable for 14 days
JOB_TIMEOUT_S = 24 * 3600  # a chunked job's execution ends (TIMED_OUT) after this

# Every finished S3 job (either route) is announced on EventBridge: the uploader subscribes with a rule on
# source JOB_EVENT_SOURCE, detail-type JOB_EVENT_DETAIL_TYPE (detail: the summary's status, input, output, counts).
JOB_EVENT_SOURCE = "maas.batch"
JOB_EVENT_BUS = "default"  # the account's default bus, as deployed
JOB_EVENT_DETAIL_TYPE = "Batch Job Finished"


# What the HTTP path publishes per request (CloudWatch EMF, functions/telemetry.py) and the per-model dashboards
# and alarms read (infra/constructs/alarms.py). Dimensions: service and model; ERRORS_BY_CODE adds code.
METRICS_NAMESPACE = "maas"


class HttpMetric(StrEnum):
    REQUESTS = "Requests"
    CLIENT_ERRORS = "ClientErrors"
    SERVER_ERRORS = "ServerErrors"
    LATENCY = "Latency"  # milliseconds, from the request's arrival at the app to its last byte
    INPUTS = "Inputs"
    INPUT_TOKENS = "InputTokens"
    OUTPUT_TOKENS = "OutputTokens"
    COLD_START = "ColdStart"  # 1 on a process's first request to a model
    ERRORS_BY_CODE = "Errors"
    IN_FLIGHT = "InFlight"  # per server process, every few seconds: requests running or waiting for a slot


def service_name(model: str) -> str:
    """The Powertools service of a deployed model: every log line and metric of its functions carries it."""
    return f"maas-{model}"


def _maas_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


class RuntimeEnvironment(BaseModel):
    """The variables a deployed function or task gets. ``None`` leaves a variable unset (the runtime's default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=_maas_name, populate_by_name=True)

    models: str = Field(description="comma-separated artifact locations: local dirs or s3://bucket/prefix")
    cache_dir: str | None = CACHE_DIR
    batch_bucket: str | None = None
    input_prefix: str | None = None
    output_prefix: str | None = None
    reply_allowlist: str | None = None
    # Sent as ExpectedBucketOwner on every S3 call: a bucket of the same name in another account is never used.
    expected_bucket_owner: str | None = None
    idempotency_table: str | None = None
    idempotency_ttl_seconds: int | None = None
    execution_providers: str | None = None
    microbatch: bool | None = None
    microbatch_wait_ms: float | None = None
    queue_url: str | None = None
    # The queue worker: each message's own deadline (seconds from its receipt), extended by a heartbeat until then.
    message_budget_s: int | None = None
    # Input bytes per chunk of a chunked S3 job (infra derives it from the model's batch rate).
    chunk_bytes: int | None = None
    # The EventBridge bus finished jobs are announced on (unset: not announced).
    job_event_bus: str | None = None
    # Seconds between the server's InFlight reports (0 = none: Lambda serves one request at a time).
    load_metrics_interval_s: float | None = None
    # Seconds one HTTP request may take end to end: the API Gateway integration timeout (GPU server) or the HTTP
    # function's timeout (Lambda). Generation stops in time to answer within it (finish_reason "length").
    request_timeout_s: float | None = None
    # The memory a batch job may budget its input windows from (a container has no Lambda context to say it).
    batch_memory_mb: int | None = None
    # Powertools' own variables: every log line and metric names the service (one per model).
    service_name: str = Field(alias="POWERTOOLS_SERVICE_NAME")
    metrics_namespace: str = Field(METRICS_NAMESPACE, alias="POWERTOOLS_METRICS_NAMESPACE")
    log_level: str = Field("INFO", alias="POWERTOOLS_LOG_LEVEL")

    def variables(self) -> dict[str, str]:
        """The environment as strings, by variable name (booleans as ``true``/``false``)."""
        return {name: _text(value) for name, value in self.model_dump(by_alias=True, exclude_none=True).items()}

    @classmethod
    def maas_fields(cls) -> list[str]:
        """The fields the runtime reads as ``MAAS_<FIELD>`` (settings must declare each of them)."""
        return [name for name, field in cls.model_fields.items() if field.alias == _maas_name(name)]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
