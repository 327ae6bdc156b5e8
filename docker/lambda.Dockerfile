# syntax=docker/dockerfile:1
# Lambda container image for one maas model, used when runtime + model exceed the 250 MB zip limit, when the
# catalog says package = "image", and for every model whose responses stream (text generation). Built by
# `cdk deploy` (DockerImageAsset), never at synth; infra always names the target:
#   runtime  the Lambda Python base image running the maas handlers (HTTP through Mangum, S3, SQS: CMD per function)
#   stream   the same, plus the AWS Lambda Web Adapter (an extension, response_stream mode) in front of the same ASGI
#            app under uvicorn: the HTTP function of a streaming model, whose tokens reach API Gateway (STREAM
#            transfer mode) as they are generated. Entry point and adapter settings come from the function
#            (functions/contract/deployment.py: STREAM_SERVER_COMMAND, LAMBDA_WEB_ADAPTER_ENVIRONMENT).
# Build context, staged by infra/packaging.py: this file, requirements.lock (the model's part of
# functions/requirements.lock: pinned, hashed), constraints.txt (the whole lock without hashes), functions/ and
# artifacts/<MODEL_NAME>/ (empty when the model is read from S3 at init).
ARG PYTHON_VERSION=3.13
ARG LAMBDA_WEB_ADAPTER_VERSION=0.9.1

FROM public.ecr.aws/awsguru/aws-lambda-adapter:${LAMBDA_WEB_ADAPTER_VERSION} AS lambda-adapter

FROM public.ecr.aws/lambda/python:${PYTHON_VERSION} AS runtime

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

FROM runtime AS stream
# The server the adapter forwards to (pure Python; its dependencies held to the lock's versions). The version is
# the one the local gateway serves the app with (maas_dev/apigw_local.py; a test keeps the two equal).
ARG UVICORN_VERSION=0.54.0
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --only-binary=:all: --target "${LAMBDA_TASK_ROOT}" -c /tmp/constraints.txt \
      "uvicorn==${UVICORN_VERSION}" \
 && rm /tmp/constraints.txt \
 && python -m compileall -q "${LAMBDA_TASK_ROOT}"
COPY --from=lambda-adapter /lambda-adapter /opt/extensions/lambda-adapter
# Lambda starts the entry point as the function's process; the adapter (an extension) polls the runtime API and
# turns each event into an HTTP request to it. infra sets the same entry point on the function.
ENTRYPOINT ["python3", "-m", "uvicorn", "functions.handlers.http:app", "--host", "127.0.0.1", "--port", "8080", \
            "--no-access-log", "--timeout-graceful-shutdown", "1"]
CMD []
