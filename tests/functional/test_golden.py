"""Golden values: served embeddings match sentence-transformers; known utterances give known intents."""

from __future__ import annotations

import numpy as np
import pytest

PAIRS = [
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("The new movie is awesome", "The new movie is so great"),
    ("How do I reset my password?", "I forgot my login credentials"),
    ("The cat sits outside", "The stock market fell sharply today"),
    ("Refund my order please", "Quantum chromodynamics describes the strong force"),
]


@pytest.fixture(scope="module")
def sentence_transformer():
    st = pytest.importorskip("sentence_transformers")
    from model_build.sources.minilm import minilm_dir

    return st.SentenceTransformer(str(minilm_dir()), device="cpu")


def test_embeddings_match_sentence_transformers(client, sentence_transformer):
    texts = [t for pair in PAIRS for t in pair]
    want = sentence_transformer.encode(texts, normalize_embeddings=False)  # the model's own Normalize module
    got = np.array(client.post("/models/minilm-embed/predict", json={"inputs": texts}).json()["outputs"])
    cosine = (got * want).sum(1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.99, cosine
    # pairwise similarities — what users actually consume — agree to within 0.02
    for i in range(0, len(texts), 2):
        assert abs(float(got[i] @ got[i + 1]) - float(want[i] @ want[i + 1])) < 0.02


def test_similar_pairs_rank_above_unrelated(client):
    texts = [t for pair in PAIRS for t in pair]
    v = np.array(client.post("/models/minilm-embed/predict", json={"inputs": texts}).json()["outputs"])
    similar = [float(v[i] @ v[i + 1]) for i in (0, 2, 4)]
    unrelated = [float(v[i] @ v[i + 1]) for i in (6, 8)]
    assert min(similar) > 0.5 > max(unrelated)


GOLDEN_INTENTS = {
    "I'm not satisfied with your last answer": "follow_up",
    "please assist immediately, my card is showing unauthorized activity": "urgent_attention_required",
    "i want a real person to help me from here": "connect_to_human",
    "I lost my credit card": "report_lost_card",
    "what's the weather like tomorrow in paris": "weather",
    "set an alarm for 7 am": "alarm",
    "how do i roll over my 401k": "rollover_401k",
    "tell me a joke": "tell_joke",
    "transfer 200 dollars from checking to savings": "transfer",
}


def test_known_utterances_get_expected_intents(client):
    texts = list(GOLDEN_INTENTS)
    r = client.post("/models/intent-classifier/predict", json={"inputs": texts})
    labels = [out[0]["label"] for out in r.json()["outputs"]]
    assert dict(zip(texts, labels, strict=True)) == GOLDEN_INTENTS


def test_label_names_are_readable(client):
    labels = client.get("/models/intent-classifier").json()["labels"]
    assert len(labels) == len(set(labels)) == 157
    assert {"oos", "follow_up", "connect_to_human", "general_customer_support"} <= set(labels)
    assert not any(label.isdigit() for label in labels)
