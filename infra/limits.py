"""AWS service limits and the sizing constants the guards check against.

Values come from the AWS service quotas pages (hard limits, not adjustable) unless marked otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024

# --- Lambda -----------------------------------------------------------------------------------------
LAMBDA_ZIP_UNZIPPED_MAX_BYTES = 250 * MIB  # function code + all layers, unzipped
LAMBDA_IMAGE_MAX_BYTES = 10 * 1024 * MIB  # uncompressed container image
LAMBDA_MEMORY_MIN_MB = 128
LAMBDA_MEMORY_MAX_MB = 10_240
LAMBDA_TIMEOUT_MAX_S = 900
LAMBDA_EPHEMERAL_MIN_MB = 512
LAMBDA_EPHEMERAL_MAX_MB = 10_240
LAMBDA_PYTHON_VERSION = "3.13"  # zip runtime and Lambda base image tag; the deps dir must match it

# Unzipped size of the runtime's third-party dependencies (functions/requirements.txt) in a Lambda zip.
# Measured with `du -sc` over site-packages of the repo's .venv (CPython 3.11, x86_64, onnxruntime 1.31,
# numpy 2.4 incl. numpy.libs, tokenizers 0.23, fastapi+starlette, pydantic+pydantic_core+settings,
# mangum, aws-lambda-powertools, anyio, idna, dotenv, jmespath): 174 MiB incl. __pycache__, plus
# pillow 13 (PIL + pillow.libs, for image models) 21 MiB = 195 MiB. aarch64 wheels are within a few MiB
# of that. Rounded up to 200 MiB. When the real dependency directory exists (see docs/infra.md, step 3
# of "Deploy"), its measured size replaces this estimate.
RUNTIME_DEPS_ESTIMATE_BYTES = 200 * MIB
# The Lambda Python base image + pip-installed runtime, for the container-image size check.
LAMBDA_IMAGE_BASE_ESTIMATE_BYTES = 1024 * MIB
# onnxruntime needs the weights once on disk/in the page cache plus its own arena: model x 2 + runtime.
RUNTIME_MEMORY_OVERHEAD_MB = 256
MODEL_MEMORY_FACTOR = 2.0
# Room left in /tmp next to an artifact downloaded from S3 at init (staging copy is renamed, not copied).
EPHEMERAL_HEADROOM_MB = 128

# --- API Gateway (REST) -----------------------------------------------------------------------------
API_INTEGRATION_TIMEOUT_DEFAULT_S = 29  # raisable for Regional APIs by quota request
API_INTEGRATION_TIMEOUT_MIN_S = 1  # 50 ms really; whole seconds here

# --- SQS --------------------------------------------------------------------------------------------
SQS_VISIBILITY_FACTOR = 6  # AWS: queue visibility timeout >= 6 x function timeout (+ batching window)
SQS_VISIBILITY_MAX_S = 43_200
SQS_BATCH_SIZE_MAX = 10_000
SQS_BATCHING_WINDOW_MAX_S = 300

# --- ECS on EC2 GPU ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInstance:
    """What one GPU instance type offers to ECS tasks."""

    vcpus: int
    memory_mib: int
    gpus: int


# Memory the ECS agent, the OS and the NVIDIA driver keep on a GPU host: tasks may reserve the rest.
ECS_HOST_RESERVED_MIB = 1024
GPU_INSTANCES: dict[str, GpuInstance] = {
    "g5.xlarge": GpuInstance(4, 16_384, 1),
    "g5.2xlarge": GpuInstance(8, 32_768, 1),
    "g5.4xlarge": GpuInstance(16, 65_536, 1),
    "g5.8xlarge": GpuInstance(32, 131_072, 1),
    "g5.12xlarge": GpuInstance(48, 196_608, 4),
    "g5.16xlarge": GpuInstance(64, 262_144, 1),
    "g6.xlarge": GpuInstance(4, 16_384, 1),
    "g6.2xlarge": GpuInstance(8, 32_768, 1),
    "g6.4xlarge": GpuInstance(16, 65_536, 1),
    "g6.8xlarge": GpuInstance(32, 131_072, 1),
    "g6.12xlarge": GpuInstance(48, 196_608, 4),
    "g6.16xlarge": GpuInstance(64, 262_144, 1),
    "g6e.xlarge": GpuInstance(4, 32_768, 1),
    "g6e.2xlarge": GpuInstance(8, 65_536, 1),
    "g6e.4xlarge": GpuInstance(16, 131_072, 1),
    "g6e.12xlarge": GpuInstance(48, 393_216, 4),
}
