"""Synth-time guards: configurations AWS would reject, or accept and then break at run time.

Each guard raises a typed :mod:`infra.errors` error naming the model and the catalog key to change.
They run while the app is built, so ``cdk synth`` (and the tests) fail before anything is deployed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from infra import limits
from infra.errors import (
    CatalogError,
    GpuSettingsError,
    PackageTooLargeError,
    RecursiveTriggerError,
    TimeoutRuleError,
)

if TYPE_CHECKING:
    from infra.config import CommonDeploy, GpuDeploy, LambdaDeploy


QUEUE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:sqs:([a-z0-9-]+):(\d{12}):([A-Za-z0-9_-]{1,80}(?:\.fifo)?)$")


def _mib(n_bytes: int) -> int:
    return math.ceil(n_bytes / limits.MIB)


def required_visibility_s(deploy: CommonDeploy) -> int:
    """SQS visibility timeout AWS asks for: 6 x the consumer's timeout + the batching window."""
    return limits.SQS_VISIBILITY_FACTOR * deploy.batch_timeout_s + deploy.batching_window_s


def check_timeouts(name: str, deploy: CommonDeploy, *, api_timeout_quota_s: int) -> int:
    """Refuse timeouts that break API Gateway or SQS; return the queue visibility timeout to use."""
    is_lambda = getattr(deploy, "target", None) == "lambda"
    if deploy.timeout_s < 1 or deploy.batch_timeout_s < 1:
        raise TimeoutRuleError(f"model {name!r}: timeout_s and batch_timeout_s must be at least 1 s")
    if is_lambda:
        for key, value in (("timeout_s", deploy.timeout_s), ("batch_timeout_s", deploy.batch_timeout_s)):
            if value > limits.LAMBDA_TIMEOUT_MAX_S:
                raise TimeoutRuleError(
                    f"model {name!r}: {key} = {value} s exceeds Lambda's {limits.LAMBDA_TIMEOUT_MAX_S} s maximum"
                )
    if not limits.API_INTEGRATION_TIMEOUT_MIN_S <= deploy.api_timeout_s <= api_timeout_quota_s:
        raise TimeoutRuleError(
            f"model {name!r}: api_timeout_s = {deploy.api_timeout_s} s, but API Gateway REST integrations "
            f"time out after {api_timeout_quota_s} s in this environment. Lower it, or request the "
            f"'Maximum integration timeout' quota increase and set -c apiTimeoutQuotaS=<seconds>"
        )
    if deploy.timeout_s > deploy.api_timeout_s:
        raise TimeoutRuleError(
            f"model {name!r}: timeout_s = {deploy.timeout_s} s is longer than the API Gateway integration "
            f"timeout ({deploy.api_timeout_s} s): callers would get a 504 while the request keeps running. "
            f"Lower timeout_s to at most {deploy.api_timeout_s} (use batch_timeout_s for long S3/SQS jobs)"
        )
    if deploy.batch_timeout_s < deploy.timeout_s:
        raise TimeoutRuleError(
            f"model {name!r}: batch_timeout_s = {deploy.batch_timeout_s} s is shorter than timeout_s = "
            f"{deploy.timeout_s} s: a batch job (a whole S3 object, or a batch of queued messages) would have "
            f"less time than one API request. Raise batch_timeout_s (default 300) or remove it"
        )
    if deploy.batching_window_s > limits.SQS_BATCHING_WINDOW_MAX_S:
        raise TimeoutRuleError(
            f"model {name!r}: batching_window_s must be at most {limits.SQS_BATCHING_WINDOW_MAX_S} s"
        )
    if not 1 <= deploy.batch_size <= limits.SQS_BATCH_SIZE_MAX:
        raise CatalogError(f"model {name!r}: batch_size must be 1..{limits.SQS_BATCH_SIZE_MAX}")
    if deploy.batch_size > 10 and deploy.batching_window_s < 1:
        raise CatalogError(f"model {name!r}: SQS batch_size > 10 needs batching_window_s >= 1 (an AWS rule)")
    if not 1 <= deploy.max_receive_count <= 1000:
        raise CatalogError(f"model {name!r}: max_receive_count must be 1..1000")
    required = required_visibility_s(deploy)
    if required > limits.SQS_VISIBILITY_MAX_S:
        raise TimeoutRuleError(
            f"model {name!r}: batch_timeout_s = {deploy.batch_timeout_s} s needs an SQS visibility timeout of "
            f"{required} s (6x + batching window), above SQS's {limits.SQS_VISIBILITY_MAX_S} s maximum"
        )
    chosen = deploy.queue_visibility_timeout_s
    if chosen is not None and chosen < required:
        raise TimeoutRuleError(
            f"model {name!r}: queue_visibility_timeout_s = {chosen} s is less than 6 x batch_timeout_s "
            f"({deploy.batch_timeout_s} s) + batching_window_s = {required} s: messages would become visible "
            f"again while still being processed and run twice. Raise it to at least {required} or remove it"
        )
    if chosen is not None and chosen > limits.SQS_VISIBILITY_MAX_S:
        raise TimeoutRuleError(f"model {name!r}: queue_visibility_timeout_s must be at most 43200 s")
    return chosen if chosen is not None else required


def check_lambda_sizing(
    name: str, deploy: LambdaDeploy, *, artifact_bytes: int, runtime_bytes: int
) -> Literal["zip", "image"]:
    """Check memory, storage and concurrency; choose zip or image from the 250 MB unzipped limit."""
    for key, value in (("memory_mb", deploy.memory_mb), ("batch_memory_mb", deploy.batch_memory_mb)):
        if value is not None and not limits.LAMBDA_MEMORY_MIN_MB <= value <= limits.LAMBDA_MEMORY_MAX_MB:
            raise CatalogError(
                f"model {name!r}: {key} = {value} is outside Lambda's "
                f"{limits.LAMBDA_MEMORY_MIN_MB}..{limits.LAMBDA_MEMORY_MAX_MB} MB"
            )
    if not limits.LAMBDA_EPHEMERAL_MIN_MB <= deploy.ephemeral_storage_mb <= limits.LAMBDA_EPHEMERAL_MAX_MB:
        raise CatalogError(f"model {name!r}: ephemeral_storage_mb must be 512..10240")
    if deploy.reserved_concurrency is not None and deploy.reserved_concurrency < 1:
        raise CatalogError(f"model {name!r}: reserved_concurrency must be at least 1 (0 disables the function)")
    if deploy.reserved_concurrency is not None and deploy.provisioned_concurrency > deploy.reserved_concurrency:
        raise CatalogError(
            f"model {name!r}: provisioned_concurrency ({deploy.provisioned_concurrency}) cannot exceed "
            f"reserved_concurrency ({deploy.reserved_concurrency})"
        )
    if not 2 <= deploy.batch_max_concurrency <= 1000:
        raise CatalogError(f"model {name!r}: batch_max_concurrency must be 2..1000 (an SQS event source rule)")
    model_mb = _mib(artifact_bytes)
    needed_memory = limits.RUNTIME_MEMORY_OVERHEAD_MB + math.ceil(limits.MODEL_MEMORY_FACTOR * model_mb)
    if needed_memory > limits.LAMBDA_MEMORY_MAX_MB:
        raise PackageTooLargeError(
            f"model {name!r}: a {model_mb} MB model needs about {needed_memory} MB of memory, more than "
            f'Lambda\'s {limits.LAMBDA_MEMORY_MAX_MB} MB: deploy it with target = "gpu"'
        )
    for key, value in (("memory_mb", deploy.memory_mb), ("batch_memory_mb", deploy.batch_memory_mb)):
        if value is not None and value < needed_memory:
            raise CatalogError(
                f"model {name!r}: {key} = {value} MB is too small for a {model_mb} MB model "
                f"(needs about {needed_memory} MB: {limits.RUNTIME_MEMORY_OVERHEAD_MB} + 2 x model)"
            )
    if deploy.model_source == "s3":
        needed_tmp = model_mb + limits.EPHEMERAL_HEADROOM_MB
        if needed_tmp > deploy.ephemeral_storage_mb:
            raise PackageTooLargeError(
                f'model {name!r}: model_source = "s3" downloads {model_mb} MB into /tmp at init, but '
                f"ephemeral_storage_mb = {deploy.ephemeral_storage_mb}; set it to at least {needed_tmp}"
            )
    code_bytes = runtime_bytes + (artifact_bytes if deploy.model_source == "bundled" else 0)
    fits_zip = code_bytes <= limits.LAMBDA_ZIP_UNZIPPED_MAX_BYTES
    image_bytes = limits.LAMBDA_IMAGE_BASE_ESTIMATE_BYTES + code_bytes
    if deploy.package == "zip" and not fits_zip:
        raise PackageTooLargeError(
            f"model {name!r}: runtime ({_mib(runtime_bytes)} MB) + model ({model_mb} MB) = {_mib(code_bytes)} "
            f'MB unzipped exceeds Lambda\'s 250 MB zip limit. Set package = "image" (container image, '
            f'up to 10 GB), remove package to choose automatically, or use model_source = "s3"'
        )
    if not fits_zip and image_bytes > limits.LAMBDA_IMAGE_MAX_BYTES:
        raise PackageTooLargeError(
            f"model {name!r}: about {_mib(image_bytes)} MB as a container image exceeds Lambda's 10 GB image "
            f'limit: deploy it with target = "gpu"'
        )
    if deploy.package == "image" or not fits_zip:
        return "image"
    return "zip"


def check_gpu(name: str, deploy: GpuDeploy, *, artifact_bytes: int) -> None:
    """Check that the GPU service can actually be placed and scaled on its instance type."""
    instance = limits.GPU_INSTANCES.get(deploy.instance_type)
    if instance is None:
        raise GpuSettingsError(
            f"model {name!r}: instance_type {deploy.instance_type!r} is not a supported GPU instance; "
            f"use one of {', '.join(sorted(limits.GPU_INSTANCES))}"
        )
    if deploy.min_tasks < 1:
        raise GpuSettingsError(
            f"model {name!r}: min_tasks must be at least 1: the HTTP service scales out on CPU load, which "
            f"a service with no running task never produces (batch-only scale-to-zero is worker_min_tasks = 0)"
        )
    if deploy.max_tasks < 1:
        raise GpuSettingsError(f"model {name!r}: max_tasks must be at least 1")
    if deploy.min_tasks > deploy.max_tasks:
        raise GpuSettingsError(f"model {name!r}: min_tasks ({deploy.min_tasks}) > max_tasks ({deploy.max_tasks})")
    usable = instance.memory_mib - limits.ECS_HOST_RESERVED_MIB
    if deploy.memory_mb > usable:
        raise GpuSettingsError(
            f"model {name!r}: memory_mb = {deploy.memory_mb} does not fit a {deploy.instance_type} "
            f"({instance.memory_mib} MiB, {usable} MiB left after the ECS agent and driver)"
        )
    needed = limits.RUNTIME_MEMORY_OVERHEAD_MB + math.ceil(limits.MODEL_MEMORY_FACTOR * _mib(artifact_bytes))
    if deploy.memory_mb < needed:
        raise GpuSettingsError(f"model {name!r}: memory_mb = {deploy.memory_mb} is below the {needed} MB it needs")
    if deploy.cpu_units is not None and not 256 <= deploy.cpu_units <= instance.vcpus * 1024:
        raise GpuSettingsError(
            f"model {name!r}: cpu_units must be 256..{instance.vcpus * 1024} on {deploy.instance_type}"
        )
    if not 10 <= deploy.scale_cpu_percent <= 90:
        raise GpuSettingsError(f"model {name!r}: scale_cpu_percent must be 10..90")
    worker_max = deploy.worker_max_tasks if deploy.worker_max_tasks is not None else deploy.max_tasks
    if deploy.worker_min_tasks > worker_max:
        raise GpuSettingsError(f"model {name!r}: worker_min_tasks > worker_max_tasks")
    if deploy.worker_backlog_per_task < 1:
        raise GpuSettingsError(f"model {name!r}: worker_backlog_per_task must be at least 1")


def check_reply_queues(name: str, arns: Sequence[str]) -> None:
    """Reply queues must be SQS queue ARNs: IAM needs the ARN, the runtime's allow-list the URL."""
    for arn in arns:
        if not QUEUE_ARN_RE.fullmatch(arn):
            raise CatalogError(f"model {name!r}: reply_queue_arns entry {arn!r} is not an SQS queue ARN")


def check_prefixes(models: Sequence[tuple[str, str, str]]) -> None:
    """Refuse S3 prefixes that overlap: a write under a watched prefix would trigger a function again.

    ``models`` holds ``(name, input_prefix, output_prefix)`` for every model on the batch bucket.
    """
    for name, input_prefix, output_prefix in models:
        for key, prefix in (("input_prefix", input_prefix), ("output_prefix", output_prefix)):
            if not prefix.endswith("/") or prefix.startswith("/") or "*" in prefix or "//" in prefix:
                raise CatalogError(
                    f"model {name!r}: {key} {prefix!r} must be a key prefix ending in '/' (without it, "
                    f"'inputs/a' would also match 'inputs/ab/')"
                )
    for name, _, output_prefix in models:
        for other, input_prefix, _ in models:
            if output_prefix.startswith(input_prefix) or input_prefix.startswith(output_prefix):
                whose = "its own" if other == name else f"model {other!r}'s"
                raise RecursiveTriggerError(
                    f"model {name!r}: output_prefix {output_prefix!r} overlaps {whose} input_prefix "
                    f"{input_prefix!r}: every result written there would trigger a function again (an S3 "
                    f"event loop). Keep outputs under outputs/<name>/ and inputs under inputs/<name>/"
                )
    for i, (name, prefix, _) in enumerate(models):
        for other, other_prefix, _ in models[i + 1 :]:
            if prefix.startswith(other_prefix) or other_prefix.startswith(prefix):
                raise CatalogError(
                    f"models {name!r} and {other!r} watch overlapping input prefixes {prefix!r} and "
                    f"{other_prefix!r}; S3 refuses overlapping notifications for the same event"
                )
