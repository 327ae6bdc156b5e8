"""Runtime settings from the environment (``MAAS_*``), behind a cached getter that tests override."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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

    def model_uris(self) -> list[str]:
        return [uri.strip() for uri in self.models.split(",") if uri.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
