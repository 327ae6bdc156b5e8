# syntax=docker/dockerfile:1
# Lambda container image for one maas model, used when runtime + model exceed the 250 MB zip limit
# (or the catalog says package = "image"). Built by `cdk deploy` (DockerImageAsset), never at synth.
# Build context, staged by infra/packaging.py: this file, requirements.lock (the model's part of
# functions/requirements.lock: pinned, hashed), functions/ and artifacts/<MODEL_NAME>/ (empty when the
# model is read from S3 at init).
ARG PYTHON_VERSION=3.13
FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}

ARG MODEL_NAME
LABEL org.opencontainers.image.title="maas-${MODEL_NAME}-lambda" \
      org.opencontainers.image.description="maas runtime (onnxruntime, no torch) for Lambda"

# Runtime dependencies into the task root, exactly as locked: hash-checked binary wheels (never compile
# native code in the image), no resolution (the lock is complete; what it leaves out stays out).
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --only-binary=:all: --require-hashes --no-deps --target "${LAMBDA_TASK_ROOT}" \
      -r /tmp/requirements.lock \
 && rm /tmp/requirements.lock

COPY functions/ ${LAMBDA_TASK_ROOT}/functions/
COPY artifacts/ ${LAMBDA_TASK_ROOT}/artifacts/

# The image is read-only at run time: compile bytecode now so cold starts do not pay for it.
RUN python -m compileall -q "${LAMBDA_TASK_ROOT}"

ENV MAAS_CACHE_DIR=/tmp/maas-artifacts \
    PYTHONDONTWRITEBYTECODE=1

# One image, three functions: infra overrides CMD with the S3 and SQS handlers.
CMD ["functions.handlers.http.handler"]
