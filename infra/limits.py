"""What maas itself needs on Lambda: the runtime's Python version and the sizing estimates the guards use.

AWS's own limits live in :mod:`functions.contract.aws_limits` (the catalog rules check entries with them).
"""

from __future__ import annotations

from functions.contract.aws_limits import MIB

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
