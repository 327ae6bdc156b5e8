# syntax=docker/dockerfile:1
# Lambda container image for one maas model, used when runtime + model exceed the 250 MB zip limit
# (or the catalog says package = "image"). Built by `cdk deploy` (DockerImageAsset), never at synth.
# Build context, staged by infra/packaging.py: this file, requirements.txt (functions/requirements.txt),
# functions/ and artifacts/<MODEL_NAME>/ (empty when the model is read from S3 at init).
ARG PYTHON_VERSION=3.13
FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}

ARG MODEL_NAME
LABEL org.opencontainers.image.title="maas-${MODEL_NAME}-lambda" \
      org.opencontainers.image.description="maas runtime (onnxruntime, no torch) for Lambda"

# Runtime dependencies into the task root, binary wheels only (never compile native code in the image).
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --only-binary=:all: --target "${LAMBDA_TASK_ROOT}" -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY functions/ ${LAMBDA_TASK_ROOT}/functions/
COPY artifacts/ ${LAMBDA_TASK_ROOT}/artifacts/

# The image is read-only at run time: compile bytecode now so cold starts do not pay for it.
RUN python -m compileall -q "${LAMBDA_TASK_ROOT}"

ENV MAAS_CACHE_DIR=/tmp/maas-artifacts \
    PYTHONDONTWRITEBYTECODE=1

# One image, three functions: infra overrides CMD with the S3 and SQS handlers.
CMD ["functions.handlers.http.handler"]
