"""Catalog rules that depend on the entries alone: configurations AWS would reject, or accept and then break.

Each rule raises a typed :mod:`functions.contract.errors` error naming the model and the key to change.
``maas build`` and ``cdk synth`` both run them (through :func:`functions.contract.catalog.load_catalog`),
so neither accepts an entry the other refuses. Rules that need the deployment environment (the stage's
API Gateway quota) or the built artifact (its size) are infra's (``infra/guards.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from functions.contract import aws_limits as aws
from functions.contract.errors import CatalogError, GpuSettingsError, RecursiveTriggerError, TimeoutRuleError
from functions.contract.tasks import OPENAI_PATHS

if TYPE_CHECKING:
    from functions.contract.catalog import CatalogEntry, CommonDeploy, GpuDeploy, LambdaDeploy

QUEUE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:sqs:([a-z0-9-]+):(\d{12}):([A-Za-z0-9_-]{1,80}(?:\.fifo)?)$")


def check_entry(entry: CatalogEntry) -> None:
    """Every rule about one entry."""
    check_reply_queues(entry.name, entry.deploy.reply_queue_arns)
    check_timeouts(entry.name, entry.deploy)
    if entry.deploy.target == "lambda":
        check_lambda(entry.name, entry.deploy)
    else:
        check_gpu(entry.name, entry.deploy)
    for key, prefix in (("input_prefix", entry.input_prefix), ("output_prefix", entry.output_prefix)):
        if not prefix.endswith("/") or prefix.startswith("/") or "*" in prefix or "//" in prefix:
            raise CatalogError(
                f"model {entry.name!r}: {key} {prefix!r} must be a key prefix ending in '/' (without it, "
                f"'inputs/a' would also match 'inputs/ab/')"
            )


def check_catalog(entries: Sequence[CatalogEntry]) -> None:
    """The rules that span entries: disjoint S3 prefixes, one owner per OpenAI path."""
    check_prefixes([(e.name, e.input_prefix, e.output_prefix) for e in entries])
    for path in sorted({p for paths in OPENAI_PATHS.values() for p in paths}):
        claimed = [e.name for e in entries if path in OPENAI_PATHS.get(e.task, ()) and e.deploy.openai_route is True]
        if len(claimed) > 1:
            raise CatalogError(
                f"models {', '.join(claimed)} all set openai_route = true for {path}; only one model can own it"
            )


def required_visibility_s(deploy: CommonDeploy) -> int:
    """SQS visibility timeout AWS asks for: 6 x the consumer's timeout + the batching window."""
    return aws.SQS_VISIBILITY_FACTOR * deploy.batch_timeout_s + deploy.batching_window_s


def queue_visibility_s(deploy: CommonDeploy) -> int:
    """The visibility timeout the model's queue gets: the entry's own, else what AWS asks for."""
    chosen = deploy.queue_visibility_timeout_s
    return chosen if chosen is not None else required_visibility_s(deploy)


def check_timeouts(name: str, deploy: CommonDeploy) -> None:
    """Refuse timeouts that break API Gateway, Lambda or SQS."""
    if deploy.timeout_s < 1 or deploy.batch_timeout_s < 1 or deploy.api_timeout_s < aws.API_INTEGRATION_TIMEOUT_MIN_S:
        raise TimeoutRuleError(f"model {name!r}: timeout_s, api_timeout_s and batch_timeout_s must be at least 1 s")
    if getattr(deploy, "target", None) == "lambda":
        for key, value in (("timeout_s", deploy.timeout_s), ("batch_timeout_s", deploy.batch_timeout_s)):
            if value > aws.LAMBDA_TIMEOUT_MAX_S:
                raise TimeoutRuleError(
                    f"model {name!r}: {key} = {value} s exceeds Lambda's {aws.LAMBDA_TIMEOUT_MAX_S} s maximum"
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
    if deploy.batching_window_s > aws.SQS_BATCHING_WINDOW_MAX_S:
        raise TimeoutRuleError(f"model {name!r}: batching_window_s must be at most {aws.SQS_BATCHING_WINDOW_MAX_S} s")
    if not 1 <= deploy.batch_size <= aws.SQS_BATCH_SIZE_MAX:
        raise CatalogError(f"model {name!r}: batch_size must be 1..{aws.SQS_BATCH_SIZE_MAX}")
    if deploy.batch_size > 10 and deploy.batching_window_s < 1:
        raise CatalogError(f"model {name!r}: SQS batch_size > 10 needs batching_window_s >= 1 (an AWS rule)")
    if not 1 <= deploy.max_receive_count <= 1000:
        raise CatalogError(f"model {name!r}: max_receive_count must be 1..1000")
    required = required_visibility_s(deploy)
    if required > aws.SQS_VISIBILITY_MAX_S:
        raise TimeoutRuleError(
            f"model {name!r}: batch_timeout_s = {deploy.batch_timeout_s} s needs an SQS visibility timeout of "
            f"{required} s (6x + batching window), above SQS's {aws.SQS_VISIBILITY_MAX_S} s maximum"
        )
    chosen = deploy.queue_visibility_timeout_s
    if chosen is not None and chosen < required:
        raise TimeoutRuleError(
            f"model {name!r}: queue_visibility_timeout_s = {chosen} s is less than 6 x batch_timeout_s "
            f"({deploy.batch_timeout_s} s) + batching_window_s = {required} s: messages would become visible "
            f"again while still being processed and run twice. Raise it to at least {required} or remove it"
        )
    if chosen is not None and chosen > aws.SQS_VISIBILITY_MAX_S:
        raise TimeoutRuleError(f"model {name!r}: queue_visibility_timeout_s must be at most 43200 s")


def check_lambda(name: str, deploy: LambdaDeploy) -> None:
    """Memory, storage and concurrency within Lambda's limits."""
    for key, value in (("memory_mb", deploy.memory_mb), ("batch_memory_mb", deploy.batch_memory_mb)):
        if value is not None and not aws.LAMBDA_MEMORY_MIN_MB <= value <= aws.LAMBDA_MEMORY_MAX_MB:
            raise CatalogError(
                f"model {name!r}: {key} = {value} is outside Lambda's "
                f"{aws.LAMBDA_MEMORY_MIN_MB}..{aws.LAMBDA_MEMORY_MAX_MB} MB"
            )
    if not aws.LAMBDA_EPHEMERAL_MIN_MB <= deploy.ephemeral_storage_mb <= aws.LAMBDA_EPHEMERAL_MAX_MB:
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
    if deploy.snap_start:
        for clash, why in (
            (deploy.provisioned_concurrency > 0, "provisioned_concurrency (AWS does not combine the two)"),
            (deploy.package == "image", 'package = "image" (SnapStart is for zip packages)'),
            (deploy.ephemeral_storage_mb > aws.LAMBDA_EPHEMERAL_MIN_MB, "ephemeral_storage_mb above 512"),
        ):
            if clash:
                raise CatalogError(f"model {name!r}: snap_start cannot be used with {why}; drop one of them")


def check_gpu(name: str, deploy: GpuDeploy) -> None:
    """The GPU service can actually be placed and scaled on its instance type."""
    instance = aws.GPU_INSTANCES.get(deploy.instance_type)
    if instance is None:
        raise GpuSettingsError(
            f"model {name!r}: instance_type {deploy.instance_type!r} is not a supported GPU instance; "
            f"use one of {', '.join(sorted(aws.GPU_INSTANCES))}"
        )
    if deploy.min_tasks < 1:
        raise GpuSettingsError(
            f"model {name!r}: min_tasks must be at least 1: the HTTP service scales on the requests its tasks "
            f"report, which a service with no running task never does (batch-only scale-to-zero is "
            f"worker_min_tasks = 0)"
        )
    if deploy.max_tasks < 1:
        raise GpuSettingsError(f"model {name!r}: max_tasks must be at least 1")
    if deploy.min_tasks > deploy.max_tasks:
        raise GpuSettingsError(f"model {name!r}: min_tasks ({deploy.min_tasks}) > max_tasks ({deploy.max_tasks})")
    usable = instance.memory_mib - aws.ECS_HOST_RESERVED_MIB
    if deploy.memory_mb > usable:
        raise GpuSettingsError(
            f"model {name!r}: memory_mb = {deploy.memory_mb} does not fit a {deploy.instance_type} "
            f"({instance.memory_mib} MiB, {usable} MiB left after the ECS agent and driver)"
        )
    if deploy.cpu_units is not None and not 256 <= deploy.cpu_units <= instance.vcpus * 1024:
        raise GpuSettingsError(
            f"model {name!r}: cpu_units must be 256..{instance.vcpus * 1024} on {deploy.instance_type}"
        )
    if not 1 <= deploy.scale_in_flight_per_task <= 1024:
        raise GpuSettingsError(f"model {name!r}: scale_in_flight_per_task must be 1..1024")
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


def queue_url(arn: str) -> str:
    """The SQS queue URL for a queue ARN (``MAAS_REPLY_ALLOWLIST`` holds URLs, IAM holds ARNs)."""
    match = QUEUE_ARN_RE.fullmatch(arn)
    if match is None:
        raise ValueError(f"{arn!r} is not an SQS queue ARN")
    region, account, queue = match.groups()
    return f"https://sqs.{region}.amazonaws.com/{account}/{queue}"


def check_prefixes(models: Sequence[tuple[str, str, str]]) -> None:
    """Refuse S3 prefixes that overlap: a write under a watched prefix would trigger a function again.

    ``models`` holds ``(name, input_prefix, output_prefix)`` for every model on the batch bucket.
    """
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
