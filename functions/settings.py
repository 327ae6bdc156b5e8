"""The runtime's one settings model, from ``MAAS_*`` environment variables, behind a cached getter tests override.

infra writes these variables by the names in :class:`functions.contract.deployment.RuntimeEnvironment`
(a test keeps every name it writes declared here). Sections: where the models come from and how they run;
the HTTP server (keys, admission control, micro-batching); the S3/SQS batch paths; the queue worker.
An unsafe batch layout (an output prefix the input notification would match) is refused when the settings
load: at init, before any event is handled.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from functions.contract.deployment import CACHE_DIR, ENV_PREFIX, IDEMPOTENCY_DIR, RUNS_DIR
from functions.errors import SettingsError

_MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum multipart part size (all parts but the last)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- models ----------------------------------------------------------------------------------------
    # Comma-separated artifact locations: local directories or s3://bucket/prefix URIs.
    # A Lambda function hosts one model; `maas serve` may host several.
    models: str = ""
    cache_dir: Path = Path(CACHE_DIR)
    # 0 = size the ORT thread pool from the CPUs this process may really use (cgroup quota, affinity).
    intra_op_threads: int = Field(0, ge=0)
    # Run one inference at load time so the first request does not pay for lazy initialisation.
    warmup: bool = True
    # ONNX Runtime providers, best first: "cpu" (Lambda), "cuda,cpu" or "tensorrt,cuda,cpu" (GPU container,
    # needs onnxruntime-gpu). A provider this onnxruntime lacks is a load failure that names what to install.
    execution_providers: str = "cpu"
    # Account id sent as ExpectedBucketOwner on every S3 call (artifacts and batch data alike).
    expected_bucket_owner: str = ""

    # --- HTTP ------------------------------------------------------------------------------------------
    # Largest request body accepted (TEI's default is 2 MB; Lambda's synchronous payload limit is 6 MB).
    max_request_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    # Comma-separated keys accepted in ``x-api-key`` (API Gateway's header). Empty = no key required, which
    # `maas serve` only allows on a loopback address. Health routes never need a key.
    api_keys: SecretStr = SecretStr("")
    # Admission control per process: at most this many requests in flight (0 = no cap), this many more
    # waiting at most ``queue_timeout_s`` for a slot (then 503 + Retry-After); beyond that, 429 at once.
    max_concurrency: int = Field(32, ge=0)
    max_queue: int = Field(64, ge=0)
    queue_timeout_s: float = Field(10.0, gt=0)
    # Dynamic micro-batching (functions/inference/batching.py): concurrent requests to one encoder/image
    # model share one ORT run, gathered for at most ``microbatch_wait_ms`` after the first. Off on Lambda
    # (one request per execution environment); the GPU container and busy `maas serve` turn it on.
    microbatch: bool = False
    microbatch_wait_ms: float = Field(2.0, ge=0, le=100)
    # Seconds between reports of the requests in flight or waiting (EMF metric InFlight); the GPU service
    # scales on it. 0 = never (Lambda: one request per execution environment).
    load_metrics_interval_s: float = Field(0.0, ge=0, le=300)
    # A request's body must arrive whole within ``body_timeout_s`` (408 + Connection: close otherwise). It is
    # read before the request takes an admission slot, so slow or idle uploads never hold one; at most
    # ``max_body_readers`` bodies are in transit at once (0 = no cap; beyond: 429), bounding their memory.
    body_timeout_s: float = Field(10.0, gt=0)
    max_body_readers: int = Field(128, ge=0)
    # Seconds a request may take end to end (0 = no limit of its own): infra sets the API Gateway integration
    # timeout (GPU server) or the function's timeout (Lambda). Generation ends early enough to answer in time, with
    # finish_reason "length"; on Lambda the invocation's own remaining time counts too, whichever is sooner.
    request_timeout_s: float = Field(0.0, ge=0)

    # --- S3 and SQS batch paths ------------------------------------------------------------------------
    # The bucket whose ``input_prefix`` triggers jobs; empty accepts events from any bucket (local runs).
    batch_bucket: str = ""
    input_prefix: str = "inputs/"
    output_prefix: str = "outputs/"
    # Comma-separated s3://bucket/prefix and SQS queue URLs that SQS results may be written to.
    reply_allowlist: str = ""
    # DynamoDB table for Powertools idempotency (key ``id``, TTL ``expiration``); empty = S3 records.
    idempotency_table: str = ""
    idempotency_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    csv_text_column: str = "text"
    csv_id_column: str = "id"
    # A line longer than this becomes an error line; it is never held in memory whole.
    max_line_bytes: int = Field(1024 * 1024, ge=1024)
    # Objects larger than this are rejected (summary only).
    max_object_bytes: int = Field(2 * 1024**3, ge=1)
    # Records buffered and sorted by length before chunking (less padding); multiple of max_batch.
    window_batches: int = Field(8, ge=1, le=64)
    output_part_bytes: int = Field(8 * 1024 * 1024, ge=_MIN_PART_BYTES)
    # The function's memory, of which a batch job holds at most a quarter as input (lines, images) at once.
    # 0 = the Lambda context's memory_limit_in_mb (2048 without a context); set it where there is no Lambda.
    batch_memory_mb: int = Field(0, ge=0)
    # Chunked S3 jobs (the Step Functions route): input bytes per chunk; a chunk closes at the next window of
    # records once it holds this many (infra sets it from the model's measured rate, docs/batch.md).
    chunk_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # EventBridge bus every finished job is announced on (source maas.batch); empty = not announced.
    job_event_bus: str = ""

    # --- queue worker (GPU container) --------------------------------------------------------------------
    queue_url: str = ""
    wait_seconds: int = Field(20, ge=0, le=20)  # SQS long polling
    max_messages: int = Field(10, ge=1, le=10)
    # Each message's own deadline from when it is received (0 = the queue's visibility timeout); its visibility is
    # extended every heartbeat_s seconds (0 = a third of the visibility timeout) until then.
    message_budget_s: int = Field(0, ge=0)
    heartbeat_s: float = Field(0, ge=0)

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        check_prefixes(self.input_prefix, self.output_prefix)
        if self.expected_bucket_owner and not (
            len(self.expected_bucket_owner) == 12 and self.expected_bucket_owner.isdigit()
        ):
            raise SettingsError(
                f"MAAS_EXPECTED_BUCKET_OWNER={self.expected_bucket_owner!r} must be a 12-digit AWS account id"
            )
        return self

    def model_uris(self) -> list[str]:
        return [uri.strip() for uri in self.models.split(",") if uri.strip()]

    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.get_secret_value().split(",") if key.strip()]

    @property
    def idempotency_prefix(self) -> str:
        """Where the S3 fallback idempotency store keeps its records (below the output prefix)."""
        return self.output_prefix + IDEMPOTENCY_DIR

    @property
    def runs_prefix(self) -> str:
        """Where chunked jobs keep their plan and chunk outputs until the merge (below the output prefix)."""
        return self.output_prefix + RUNS_DIR


def check_prefixes(input_prefix: str, output_prefix: str) -> None:
    """Refuse an output prefix that an S3 notification on the input prefix could match, and vice versa."""
    for name, prefix in (("MAAS_INPUT_PREFIX", input_prefix), ("MAAS_OUTPUT_PREFIX", output_prefix)):
        if not prefix:
            raise SettingsError(
                f"{name} is empty: an empty prefix means the whole bucket, which contains the other prefix. "
                "Use separate folders such as inputs/ and outputs/"
            )
        if prefix.startswith("/") or not prefix.endswith("/") or "//" in prefix:
            raise SettingsError(f"{name}={prefix!r} must be a folder: no leading '/', ending in '/', like 'inputs/'")
    if output_prefix.startswith(input_prefix) or input_prefix.startswith(output_prefix):
        raise SettingsError(
            f"MAAS_OUTPUT_PREFIX={output_prefix!r} overlaps MAAS_INPUT_PREFIX={input_prefix!r}: outputs written "
            "there would trigger the function again (an S3 event loop). Use disjoint folders, e.g. inputs/ and "
            "outputs/"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; raises :class:`SettingsError` at init when they are unsafe."""
    return Settings()
