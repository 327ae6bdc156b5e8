"""AWS service limits the catalog rules check against (hard limits from the service quotas pages unless
marked otherwise). Plain data: both ``maas build`` and ``cdk synth`` validate catalog entries with them."""

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
