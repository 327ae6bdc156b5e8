"""efficientnet-lite0 served through every protocol that fits an image model.

GIVEN the built artifact behind the real app, WHEN a user sends images as base64 JSON, as a raw upload,
or over OIP v2 (``tritonclient.http`` against a live loopback server, as BYTES or as an FP32 tensor),
THEN every route returns the same labels, and bad or oversized images get typed 4xx errors.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.build.test_image_build import ensure_image_artifact
from tests.unit.test_image_preprocessing import png_header

MODEL = "efficientnet-lite0"
CATS = {"tabby cat", "tiger cat", "Egyptian cat"}


def photo(name: str) -> bytes:
    from model_build.recipes.image import photo_path

    return photo_path(name).read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def image_registry():  # type: ignore[no-untyped-def]
    from functions.inference.registry import registry_from_settings
    from functions.settings import Settings

    registry = registry_from_settings(Settings(models=str(ensure_image_artifact())))
    assert registry.ready, registry.failures
    return registry


@pytest.fixture(scope="module")
def api(image_registry):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from functions.web.app import create_app

    with TestClient(create_app(image_registry), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def triton(image_registry) -> Iterator[object]:  # type: ignore[no-untyped-def]
    http = pytest.importorskip("tritonclient.http")
    from maas_dev.server import BackgroundServer

    with BackgroundServer(image_registry) as server:
        yield http.InferenceServerClient(server.url.removeprefix("http://"))


def top1(output: list[dict[str, object]]) -> object:
    return output[0]["label"]


def test_task_api_base64_batch_in_both_shapes(api):
    body = {"inputs": [b64(photo("chelsea")), {"image": b64(photo("coffee"))}], "parameters": {"top_k": 3}}
    response = api.post(f"/models/{MODEL}/predict", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["task"] == "image-classification" and result["truncated"] == [False, False]
    cat, coffee = result["outputs"]
    assert top1(cat) in CATS and top1(coffee) == "espresso" and coffee[0]["score"] > 0.8
    assert len(cat) == 3 and cat[0]["score"] >= cat[1]["score"] >= cat[2]["score"]
    single = api.post(f"/models/{MODEL}/predict", json={"inputs": f"data:image/jpeg;base64,{b64(photo('rocket'))}"})
    assert single.status_code == 200 and len(single.json()["outputs"][0]) == 5  # top_k defaults to 5


@pytest.mark.parametrize("media, fmt", [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")])
def test_raw_upload(api, media, fmt):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo("coffee"))).convert("RGB").save(buffer, format=fmt, quality=90)
    response = api.post(
        f"/models/{MODEL}/predict/image?top_k=2", content=buffer.getvalue(), headers={"content-type": media}
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert len(outputs) == 1 and len(outputs[0]) == 2 and top1(outputs[0]) == "espresso"


def test_raw_upload_refusals(api):
    url = f"/models/{MODEL}/predict/image"
    wrong_type = api.post(url, json={"inputs": "x"})
    assert wrong_type.status_code == 415 and wrong_type.json()["error"]["param"] == "content-type"
    assert api.post(url, content=b"", headers={"content-type": "image/png"}).status_code == 422
    unknown = api.post(f"{url}?temperature=1", content=photo("coffee"), headers={"content-type": "image/png"})
    assert unknown.status_code == 422 and "temperature" in unknown.json()["error"]["message"]


def test_bad_and_oversized_images_get_typed_errors(api):
    url = f"/models/{MODEL}/predict"
    garbage = api.post(url, json={"inputs": [b64(photo("coffee")), b64(b"definitely not an image")]})
    assert garbage.status_code == 422 and garbage.json()["error"]["param"] == "inputs[1]"
    bomb = api.post(url, json={"inputs": [b64(png_header(9000, 9000))]})
    assert bomb.status_code == 413 and "pixels" in bomb.json()["error"]["message"]
    too_many = api.post(url, json={"inputs": [b64(png_header(8, 8))] * 17})
    assert too_many.status_code == 413 and "at most 16" in too_many.json()["error"]["message"]
    big = api.post(
        f"{url}/image", content=b"\xff\xd8\xff" + b"\0" * (3 * 1024 * 1024), headers={"content-type": "image/jpeg"}
    )
    assert big.status_code == 413  # the app's request-size cap, before any decoding
    assert api.post(url, json={"inputs": [{"image": b64(photo("coffee")), "extra": 1}]}).status_code == 422


def test_pipeline_predict_takes_raw_bytes_for_batch_jobs(image_registry):
    # the S3/SQS batch contract: a list of object bodies (bytes) or base64 strings, outputs in input order
    pipeline = image_registry.get(MODEL)
    result = pipeline.predict([photo("coffee"), photo("chelsea"), b64(photo("rocket"))], {"top_k": 1})
    assert top1(result.outputs[0]) == "espresso" and top1(result.outputs[1]) in CATS
    assert len(result.outputs) == 3 and result.input_tokens == 0


def test_model_metadata_lists_both_oip_inputs(api):
    meta = api.get(f"/v2/models/{MODEL}").json()
    assert meta["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, 224, 224]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["label", "score", "probabilities"]
    info = api.get(f"/models/{MODEL}").json()
    assert info["task"] == "image-classification" and len(info["labels"]) == 1000


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_bytes_input(triton, api, binary):
    http = pytest.importorskip("tritonclient.http")
    images = [photo("chelsea"), photo("coffee")]
    # binary: raw file bytes; JSON: BYTES must be text, so the client sends base64
    data = np.array(images if binary else [b64(i).encode() for i in images], dtype=object)
    tensor = http.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    outputs = [http.InferRequestedOutput(name, binary_data=binary) for name in ("label", "score", "probabilities")]
    result = triton.infer(MODEL, [tensor], outputs=outputs)
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels[0] in CATS and labels[1] == "espresso"
    probs = result.as_numpy("probabilities")
    assert probs.shape == (2, 1000) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    task = api.post(f"/models/{MODEL}/predict", json={"inputs": [b64(images[1])], "parameters": {"top_k": 1}}).json()
    assert np.isclose(result.as_numpy("score")[1], task["outputs"][0][0]["score"], atol=1e-6)


def test_tritonclient_fp32_pixel_tensor(triton, image_registry):
    http = pytest.importorskip("tritonclient.http")
    from functions.inference.images import pixel_batch

    pipeline = image_registry.get(MODEL)
    pixels = pixel_batch([photo("coffee"), photo("rocket")], pipeline.preprocessing)  # the client preprocesses
    tensor = http.InferInput("pixel_values", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    result = triton.infer(MODEL, [tensor])
    labels = [x.decode() for x in result.as_numpy("label")]
    assert labels[0] == "espresso" and labels[1] in {"missile", "projectile", "space shuttle"}
    from functions.protocols.oip import mapping

    from_bytes = mapping.infer(pipeline, {"image": np.array([photo("coffee")], dtype=object)}, {})
    assert np.allclose(result.as_numpy("probabilities")[0], from_bytes["probabilities"][0], atol=1e-6)


def test_tritonclient_input_errors(triton):
    http = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    both = [http.InferInput("image", [1], "BYTES"), http.InferInput("pixel_values", [1, 3, 224, 224], "FP32")]
    both[0].set_data_from_numpy(np.array([photo("coffee")], dtype=object))
    both[1].set_data_from_numpy(np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(InferenceServerException, match="exactly one of"):
        triton.infer(MODEL, both)
    wrong = http.InferInput("pixel_values", [1, 3, 32, 32], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InferenceServerException, match=r"\[N, 3, 224, 224\]"):
        triton.infer(MODEL, [wrong])
    assert triton.is_model_ready(MODEL)
