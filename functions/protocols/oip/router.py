"""Open Inference Protocol v2 (KServe / Triton ``/v2/...``), with the binary tensor data extension."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from functions.errors import InvalidInputError, ModelNotFoundError
from functions.inference.pipelines import Pipeline
from functions.protocols.base import RegistryDep, protocol_router, record_usage
from functions.protocols.oip import codec as oip_codec
from functions.protocols.oip import mapping
from functions.protocols.oip.errors import OIP
from functions.protocols.oip.schemas import (
    OipInferRequest,
    OipInferResponse,
    OipModelMetadata,
    OipServerMetadata,
    OipTensorMetadata,
)

router = protocol_router(OIP, prefix="/v2", tags=["Open Inference Protocol v2"])
SERVER_VERSION = "0.1.0"


@router.get("", response_model=OipServerMetadata, summary="Server metadata")
def server_metadata() -> OipServerMetadata:
    return OipServerMetadata(name="maas", version=SERVER_VERSION, extensions=["binary_tensor_data"])


@router.get("/health/live", summary="Liveness: the process answers")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Readiness: every configured model loaded")
def ready(registry: RegistryDep) -> JSONResponse:
    body: dict[str, Any] = {"ready": registry.ready, "models": registry.names()}
    if registry.failures:
        body["failures"] = registry.failure_summary()
        body["detail"] = "artifacts failed to load; the process logs name each one and the reason"
    return JSONResponse(body, status_code=200 if registry.ready else 503)


def _pipeline(registry: RegistryDep, model: str, version: str | None) -> Pipeline[Any]:
    pipeline = registry.get(model)
    if version not in (None, "", pipeline.manifest.version, "1"):
        raise ModelNotFoundError(
            f"model {model!r} has version {pipeline.manifest.version}, not {version!r}", param="version"
        )
    return pipeline


@router.get("/models/{model}", response_model=OipModelMetadata, summary="Model metadata")
@router.get("/models/{model}/versions/{version}", response_model=OipModelMetadata, include_in_schema=False)
def model_metadata(model: str, registry: RegistryDep, version: str | None = None) -> OipModelMetadata:
    pipeline = _pipeline(registry, model, version)
    return OipModelMetadata(
        name=pipeline.name,
        versions=[pipeline.manifest.version],
        inputs=[
            OipTensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape) for t in mapping.input_tensors(pipeline)
        ],
        outputs=[
            OipTensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape) for t in mapping.output_tensors(pipeline)
        ],
    )


@router.get("/models/{model}/ready", summary="Model readiness")
@router.get("/models/{model}/versions/{version}/ready", include_in_schema=False)
def model_ready(model: str, registry: RegistryDep, version: str | None = None) -> dict[str, Any]:
    pipeline = _pipeline(registry, model, version)
    return {"name": pipeline.name, "ready": True}


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": OipInferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/models/{model}/infer",
    response_model=OipInferResponse,
    summary="Inference (JSON, or binary tensor data with Inference-Header-Content-Length)",
    openapi_extra=_INFER_BODY,
)
@router.post("/models/{model}/versions/{version}/infer", include_in_schema=False)
async def infer(model: str, request: Request, registry: RegistryDep, version: str | None = None) -> Response:
    pipeline = _pipeline(registry, model, version)
    body = await request.body()
    parsed, arrays = oip_codec.parse_infer_request(body, request.headers.get(oip_codec.HEADER_LENGTH))
    params = dict(parsed.parameters or {})
    binary_default = bool(params.pop("binary_data_output", False))
    params = {k: v for k, v in params.items() if k not in ("sequence_id", "priority", "timeout")}
    outputs = await run_in_threadpool(mapping.infer, pipeline, arrays, params)
    count = max((int(a.shape[0]) if a.ndim else 1) for a in arrays.values())
    record_usage(request, pipeline.name, inputs=count)
    return _encode_response(pipeline, parsed, outputs, binary_default)


def _encode_response(
    pipeline: Pipeline[Any], request: OipInferRequest, outputs: dict[str, Any], binary_default: bool
) -> Response:
    selected: list[tuple[str, bool]] = []
    if request.outputs:
        for out in request.outputs:
            if out.name not in outputs:
                raise InvalidInputError(
                    f"unknown output {out.name!r}; model {pipeline.name} produces {sorted(outputs)}", param="outputs"
                )
            selected.append((out.name, bool((out.parameters or {}).get("binary_data", binary_default))))
    else:
        selected = [(name, binary_default) for name in outputs]
    header_outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in selected:
        array = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": oip_codec.datatype_of(array), "shape": list(array.shape)}
        if binary:
            blob = oip_codec.to_binary(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = oip_codec.to_json_data(array)
        header_outputs.append(entry)
    header: dict[str, Any] = {
        "model_name": pipeline.name,
        "model_version": pipeline.manifest.version,
        "outputs": header_outputs,
    }
    if request.id is not None:
        header["id"] = request.id
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return Response(encoded, media_type="application/json")
    return Response(
        encoded + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(encoded))},
    )
