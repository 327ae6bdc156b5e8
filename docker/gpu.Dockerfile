# syntax=docker/dockerfile:1
# CUDA serving image for a maas `gpu` model: the FastAPI app under uvicorn with onnxruntime-gpu, run by
# ECS on GPU instances (ECS GPU-optimized AMI, which provides the NVIDIA driver). CUDA and cuDNN come
# from NVIDIA's pip wheels pulled by onnxruntime-gpu's [cuda,cudnn] extras, so their versions always
# match the onnxruntime build (1.31 = CUDA 13 / cuDNN 9: the host driver must be >= 580).
# Built by `cdk deploy` (DockerImageAsset), never at synth. Build context, staged by
# infra/packaging.py: this file, requirements.lock (the model's part of functions/requirements.lock,
# without onnxruntime), constraints.txt (the whole lock without hashes), functions/ and
# artifacts/<MODEL_NAME>/.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock constraints.txt /tmp/
# The runtime exactly as locked (hash-checked, no resolution), then what only this image needs: the CUDA
# build of onnxruntime, the server and the AWS SDK (Lambda provides boto3, a container does not), held
# to the lock's versions wherever they share a dependency with it (pip refuses hashes in constraints).
RUN pip install --only-binary=:all: --require-hashes --no-deps -r /tmp/requirements.lock \
 && pip install --only-binary=:all: -c /tmp/constraints.txt \
      "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}" "uvicorn[standard]>=0.30" "boto3>=1.35" \
 && find /opt/venv -type d -path '*/site-packages/nvidia/*' -name lib > /opt/venv/nvidia-libs.conf \
 && python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
ARG MODEL_NAME
LABEL org.opencontainers.image.title="maas-${MODEL_NAME}-gpu" \
      org.opencontainers.image.description="maas runtime (onnxruntime-gpu, no torch) for ECS GPU"
COPY --from=build /opt/venv /opt/venv
# Let the dynamic loader find the pip-installed CUDA/cuDNN libraries that the CUDA provider dlopens.
RUN cp /opt/venv/nvidia-libs.conf /etc/ld.so.conf.d/nvidia-pip.conf && ldconfig \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin maas
WORKDIR /app
COPY functions/ /app/functions/
COPY artifacts/ /app/artifacts/
RUN python -m compileall -q /app/functions
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAAS_CACHE_DIR=/tmp/maas-artifacts \
    MAAS_EXECUTION_PROVIDERS=cuda,cpu \
    MAAS_MICROBATCH=true \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001
EXPOSE 8080
# ECS runs the same probe from the task definition; this one serves `docker run` locally.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=3)"]
# The queue worker runs this image with CMD ["python", "-m", "functions.handlers.worker"].
CMD ["uvicorn", "functions.handlers.http:app", "--host", "0.0.0.0", "--port", "8080", "--timeout-keep-alive", "75"]
