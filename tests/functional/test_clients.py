"""The real clients against a live loopback server: the `openai` SDK and `tritonclient.http`."""

from __future__ import annotations

import numpy as np
import pytest

openai = pytest.importorskip("openai")
triton = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def oai(live_server):
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused-locally", max_retries=0)


@pytest.fixture(scope="module")
def tc(live_server):
    return triton.InferenceServerClient(live_server.removeprefix("http://"))


def test_openai_sdk_embeddings_default_base64(oai, client):
    # the SDK asks for base64 unless told otherwise and decodes it; vectors must equal the task API's
    result = oai.embeddings.create(model="minilm-embed", input=["hello world", "serverless inference"])
    assert [d.index for d in result.data] == [0, 1]
    got = np.array([d.embedding for d in result.data])
    want = np.array(
        client.post("/models/minilm-embed/predict", json={"inputs": ["hello world", "serverless inference"]}).json()[
            "outputs"
        ]
    )
    assert got.shape == (2, 384) and np.allclose(got, want, atol=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0


def test_openai_sdk_float_format_and_models(oai):
    result = oai.embeddings.create(model="minilm-embed", input="one text", encoding_format="float")
    assert len(result.data[0].embedding) == 384
    assert {"minilm-embed", "intent-classifier"} <= {m.id for m in oai.models.list().data}


def test_openai_sdk_errors_are_typed(oai):
    with pytest.raises(openai.NotFoundError) as missing:
        oai.embeddings.create(model="no-such-model", input="x")
    assert "no-such-model" in str(missing.value)
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="intent-classifier", input="x")


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infer_classifier(tc, binary):
    texts = np.array([b"I lost my credit card", b"tell me a joke"], dtype=object)
    tensor = triton.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary),
        triton.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = tc.infer("intent-classifier", [tensor], outputs=outputs)
    assert [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")] == [
        "report_lost_card",
        "tell_joke",
    ]
    probs = result.as_numpy("probabilities")
    assert probs.shape == (2, 157) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_tritonclient_embeddings_all_outputs_binary(tc):
    tensor = triton.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(np.array([b"a", b"b", b"c"], dtype=object))
    result = tc.infer("minilm-embed", [tensor])  # no outputs named: the client asks for binary outputs
    embeddings = result.as_numpy("embeddings")
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, 384)


def test_tritonclient_health_and_metadata(tc):
    assert tc.is_server_live() and tc.is_server_ready()
    assert tc.is_model_ready("minilm-embed")
    assert not tc.is_model_ready("no-such-model")
    meta = tc.get_model_metadata("intent-classifier")
    assert [o["name"] for o in meta["outputs"]] == ["label", "score", "probabilities"]


def test_tritonclient_error_is_raised_with_message(tc):
    tensor = triton.InferInput("wrong_name", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(triton.InferenceServerException, match="takes inputs"):
        tc.infer("minilm-embed", [tensor])
