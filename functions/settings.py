"""Runtime settings from the environment (``MAAS_*``), behind a cached getter that tests override."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_", extra="ignore")

    # Comma-separated artifact locations: local directories or s3://bucket/prefix URIs.
    # A Lambda function hosts one model; `maas serve` may host several.
    models: str = ""
    cache_dir: Path = Path("/tmp/maas-artifacts")
    # 0 = size the ORT thread pool from the CPUs this process may really use (cgroup quota, affinity).
    intra_op_threads: int = Field(0, ge=0)
    # Run one inference at load time so the first request does not pay for lazy initialisation.
    warmup: bool = True
    # Largest request body accepted (TEI's default is 2 MB; Lambda's synchronous payload limit is 6 MB).
    max_request_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    log_level: str = "INFO"
    service_name: str = "maas"
    # Comma-separated keys accepted in ``x-api-key`` (API Gateway's header). Empty = no key required, which
    # `maas serve` only allows on a loopback address. Health routes never need a key.
    api_keys: SecretStr = SecretStr("")
    # Admission control per process: at most this many requests in flight (0 = no cap), this many more
    # waiting at most ``queue_timeout_s`` for a slot (then 503 + Retry-After); beyond that, 429 at once.
    max_concurrency: int = Field(32, ge=0)
    max_queue: int = Field(64, ge=0)
    queue_timeout_s: float = Field(10.0, gt=0)
    # ONNX Runtime providers, best first: "cpu" (Lambda), "cuda,cpu" or "tensorrt,cuda,cpu" (GPU container,
    # needs onnxruntime-gpu). A provider this onnxruntime lacks is a load failure that names what to install.
    execution_providers: str = "cpu"
    # Dynamic micro-batching (functions/inference/microbatch.py): concurrent requests to one encoder/image
    # model share one ORT run, gathered for at most ``microbatch_wait_ms`` after the first. Off on Lambda
    # (one request per execution environment); the GPU container and busy `maas serve` turn it on.
    microbatch: bool = False
    microbatch_wait_ms: float = Field(2.0, ge=0, le=100)
    # Account id sent as ExpectedBucketOwner when artifacts are read from S3 (the batch paths read it too).
    expected_bucket_owner: str = Field("", pattern=r"^(\d{12})?$")

    def model_uris(self) -> list[str]:
        return [uri.strip() for uri in self.models.split(",") if uri.strip()]

    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.get_secret_value().split(",") if key.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
