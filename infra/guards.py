"""Synth-time guards that need the deployment: the stage's API Gateway quota and the built artifact's size.

Every rule that depends on a catalog entry alone lives in :mod:`functions.contract.rules` and runs when
the catalog is read (for ``maas build`` too). These raise typed errors naming the model and the key to
change, while the app is built, so ``cdk synth`` fails before anything is deployed.
"""

from __future__ import annotations

import math
from typing import Literal

from functions.contract import aws_limits as aws
from functions.contract.catalog import CommonDeploy, GpuDeploy, LambdaDeploy
from infra import limits
from infra.errors import CatalogError, GpuSettingsError, PackageTooLargeError, TimeoutRuleError


def _mib(n_bytes: int) -> int:
    return math.ceil(n_bytes / aws.MIB)


def needed_memory_mb(artifact_bytes: int) -> int:
    """Memory a model needs: the runtime's overhead + the weights twice (on disk/page cache and in ORT)."""
    return limits.RUNTIME_MEMORY_OVERHEAD_MB + math.ceil(limits.MODEL_MEMORY_FACTOR * _mib(artifact_bytes))


def check_api_timeout(name: str, deploy: CommonDeploy, *, api_timeout_quota_s: int) -> None:
    """The integration timeout must fit this account's API Gateway quota (29 s unless raised)."""
    if deploy.api_timeout_s > api_timeout_quota_s:
        raise TimeoutRuleError(
            f"model {name!r}: api_timeout_s = {deploy.api_timeout_s} s, but API Gateway REST integrations "
            f"time out after {api_timeout_quota_s} s in this environment. Lower it, or request the "
            f"'Maximum integration timeout' quota increase and set -c apiTimeoutQuotaS=<seconds>"
        )


def check_lambda_sizing(
    name: str, deploy: LambdaDeploy, *, artifact_bytes: int, runtime_bytes: int, streams: bool = False
) -> Literal["zip", "image"]:
    """Check memory and storage against the model's size; choose zip or image from the 250 MB unzipped limit.

    A model whose responses stream ships as an image whatever its size: the Lambda Web Adapter that streams them
    is part of the image (docker/lambda.Dockerfile, target ``stream``).
    """
    if streams and deploy.package == "zip":
        raise CatalogError(
            f'model {name!r}: package = "zip", but its task streams tokens through the Lambda Web Adapter, which '
            f'ships in the model\'s container image: remove package (or set "image")'
        )
    if streams and deploy.snap_start:
        raise CatalogError(
            f"model {name!r}: snap_start is for zip packages, and a streaming model ships as a container image; "
            "remove snap_start"
        )
    model_mb = _mib(artifact_bytes)
    needed_memory = needed_memory_mb(artifact_bytes)
    if needed_memory > aws.LAMBDA_MEMORY_MAX_MB:
        raise PackageTooLargeError(
            f"model {name!r}: a {model_mb} MB model needs about {needed_memory} MB of memory, more than "
            f'Lambda\'s {aws.LAMBDA_MEMORY_MAX_MB} MB: deploy it with target = "gpu"'
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
    fits_zip = code_bytes <= aws.LAMBDA_ZIP_UNZIPPED_MAX_BYTES
    image_bytes = limits.LAMBDA_IMAGE_BASE_ESTIMATE_BYTES + code_bytes
    if deploy.package == "zip" and not fits_zip:
        raise PackageTooLargeError(
            f"model {name!r}: runtime ({_mib(runtime_bytes)} MB) + model ({model_mb} MB) = {_mib(code_bytes)} "
            f'MB unzipped exceeds Lambda\'s 250 MB zip limit. Set package = "image" (container image, '
            f'up to 10 GB), remove package to choose automatically, or use model_source = "s3"'
        )
    if not fits_zip and image_bytes > aws.LAMBDA_IMAGE_MAX_BYTES:
        raise PackageTooLargeError(
            f"model {name!r}: about {_mib(image_bytes)} MB as a container image exceeds Lambda's 10 GB image "
            f'limit: deploy it with target = "gpu"'
        )
    if deploy.package == "image" or not fits_zip or streams:
        return "image"
    return "zip"


def check_gpu_memory(name: str, deploy: GpuDeploy, *, artifact_bytes: int) -> None:
    """The GPU task's memory must hold the model."""
    needed = needed_memory_mb(artifact_bytes)
    if deploy.memory_mb < needed:
        raise GpuSettingsError(f"model {name!r}: memory_mb = {deploy.memory_mb} is below the {needed} MB it needs")
