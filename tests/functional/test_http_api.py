"""The HTTP API at the level users meet it: requests in, JSON (or errors in each protocol's shape) out."""

from __future__ import annotations

import numpy as np
import pytest


def test_task_api_embeddings_are_unit_vectors_one_per_input(client):
    # GIVEN two sentences WHEN embedded THEN one normalised 384-d vector each, in order, with usage
    r = client.post("/models/minilm-embed/predict", json={"inputs": ["A man is eating food.", "Hello"]})
    assert r.status_code == 200
    body = r.json()
    vectors = np.array(body["outputs"])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert body["usage"]["input_tokens"] == 8 + 3  # [CLS] a man is eating food . [SEP] / [CLS] hello [SEP]
    assert body["truncated"] == [False, False]
    assert r.headers["x-request-id"]


def test_single_string_input_is_a_batch_of_one(client):
    r = client.post("/models/minilm-embed/predict", json={"inputs": "just one"})
    assert r.status_code == 200 and len(r.json()["outputs"]) == 1


def test_batch_padding_keeps_vectors_within_quantization_noise(client):
    # a short text embedded alone or next to a long one (padding to the longest) gives the same vector up to
    # INT8 noise: dynamic quantization picks activation scales per batch (the fp32 graph is exact; see README)
    alone = client.post("/models/minilm-embed/predict", json={"inputs": ["short text"]}).json()["outputs"][0]
    padded = client.post(
        "/models/minilm-embed/predict",
        json={"inputs": ["short text", "a considerably longer sentence that forces padding of the first one " * 3]},
    ).json()["outputs"][0]
    assert float(np.dot(alone, padded)) >= 0.99
    same = client.post("/models/minilm-embed/predict", json={"inputs": ["short text"] * 4}).json()["outputs"]
    assert np.allclose(same, [alone] * 4, atol=1e-6)


def test_classifier_top_k_sorted(client):
    r = client.post(
        "/models/intent-classifier/predict", json={"inputs": ["tell me a joke"], "parameters": {"top_k": 3}}
    )
    assert r.status_code == 200
    (ranked,) = r.json()["outputs"]
    assert ranked[0]["label"] == "tell_joke"
    scores = [x["score"] for x in ranked]
    assert len(ranked) == 3 and scores == sorted(scores, reverse=True)


def test_model_listing_and_description(client):
    models = client.get("/models").json()["models"]
    assert {m["name"] for m in models} == {"minilm-embed", "intent-classifier"}
    intent = client.get("/models/intent-classifier").json()
    assert intent["task"] == "text-classification" and len(intent["labels"]) == 157
    assert all(g["passed"] for g in intent["gates"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": ["typo"]}, "inputs"),
        ({"inputs": 42}, "inputs"),
        ({"inputs": ["ok"], "parameters": {"top_k": 0}}, "parameters.top_k"),
        ({"inputs": ["ok"], "parameters": {"nope": 1}}, "parameters.nope"),
    ],
)
def test_schema_errors_are_422_naming_the_field(client, body, field):
    r = client.post("/models/intent-classifier/predict", json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["param"].startswith(field), error
    assert field.split(".")[-1] in error["message"]


def test_malformed_json_is_422(client):
    r = client.post("/models/minilm-embed/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]["message"]


def test_too_many_inputs_is_413(client):
    r = client.post("/models/minilm-embed/predict", json={"inputs": ["x"] * 33})
    assert r.status_code == 413
    assert "at most 32" in r.json()["error"]["message"]


def test_long_text_truncated_by_default_and_refused_on_request(client):
    long_text = "word " * 400  # > 256 tokens
    r = client.post("/models/minilm-embed/predict", json={"inputs": [long_text, "short"]})
    assert r.status_code == 200 and r.json()["truncated"] == [True, False]
    assert r.json()["usage"]["input_tokens"] == 256 + 3
    r = client.post("/models/minilm-embed/predict", json={"inputs": [long_text], "parameters": {"truncate": False}})
    assert r.status_code == 413
    assert "truncate" in r.json()["error"]["message"]


def test_too_many_characters_is_413(client):
    r = client.post("/models/intent-classifier/predict", json={"inputs": ["a" * 5001]})
    assert r.status_code == 413 and "5000" in r.json()["error"]["message"]


def test_oversized_body_is_413_before_parsing(client):
    r = client.post(
        "/models/minilm-embed/predict",
        content=b"x" * (2 * 1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_unknown_model_404_in_each_protocol_shape(client):
    task = client.post("/models/nope/predict", json={"inputs": "x"})
    oip = client.get("/v2/models/nope")
    oai = client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert task.status_code == oip.status_code == oai.status_code == 404
    assert task.json()["error"]["code"] == "model_not_found"
    assert isinstance(oip.json()["error"], str)
    assert oai.json()["error"]["type"] == "invalid_request_error"


def test_model_that_failed_to_load_is_503_and_not_ready(built_artifacts, tmp_path):
    from fastapi.testclient import TestClient

    from functions.inference.registry import registry_from_settings
    from functions.settings import Settings
    from functions.web.app import create_app

    registry = registry_from_settings(Settings(models=str(tmp_path / "missing-artifact")))
    with TestClient(create_app(registry)) as c:
        assert c.get("/v2/health/live").status_code == 200
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["failures"]
        assert c.post("/models/minilm-embed/predict", json={"inputs": "x"}).status_code == 503


def test_embeddings_route_refuses_a_classifier(client):
    r = client.post("/v1/embeddings", json={"model": "intent-classifier", "input": "x"})
    assert r.status_code == 400 and "sentence-embeddings" in r.json()["error"]["message"]


def test_openai_token_arrays_are_refused_clearly(client):
    r = client.post("/v1/embeddings", json={"model": "minilm-embed", "input": [101, 102]})
    assert r.status_code == 422 and "send text" in r.json()["error"]["message"]


def test_oip_json_infer_and_metadata(client):
    meta = client.get("/v2/models/minilm-embed").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"][0]["shape"] == [-1, 384]
    body = {"id": "req-1", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}
    r = client.post("/v2/models/minilm-embed/infer", json=body)
    assert r.status_code == 200
    out = r.json()
    assert out["id"] == "req-1" and out["model_version"] == meta["versions"][0]
    assert out["outputs"][0]["shape"] == [2, 384] and len(out["outputs"][0]["data"]) == 768


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a", "b"]}, "needs 3 elements"),
        ({"name": "txt", "datatype": "BYTES", "shape": [1], "data": ["a"]}, "missing ['text']"),
        ({"name": "text", "datatype": "FLOAT", "shape": [1], "data": [1.0]}, "unknown datatype"),
        ({"name": "text", "datatype": "BYTES", "shape": [1]}, "neither data"),
    ],
)
def test_oip_bad_tensors_are_clear_errors(client, tensor, fragment):
    r = client.post("/v2/models/minilm-embed/infer", json={"inputs": [tensor]})
    assert r.status_code == 422
    assert fragment in r.json()["error"]


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    for path in ("/models/{model}/predict", "/v2/models/{model}/infer", "/v1/embeddings", "/v2/health/ready"):
        assert path in spec["paths"]
    assert client.get("/docs").status_code == 200
