"""Translation end to end: a tiny random Marian checkpoint → `maas build` (catalog entry) → the HTTP API.

No real translation weights exist offline, so the architecture is proven on a randomly initialised
MarianMTModel (d_model 32, 2+2 layers, word-level vocabulary of 160) whose EOS logit is biased so that
outputs end at many different lengths. Served outputs must equal transformers' ``generate`` token for
token, for greedy and beam search.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from functions.inference.loader import verify_artifact
from functions.inference.pipelines.seq2seq import TranslationParameters, TranslationPipeline
from functions.inference.registry import ModelRegistry, pipeline_for
from functions.settings import Settings
from functions.web.app import create_app
from model_build.build import BuildResult, build_model
from model_build.catalog import load_catalog
from model_build.validate import DATA_DIR

pytestmark = pytest.mark.slow

NAME = "tiny-marian"
EOS, UNK, PAD = 0, 1, 2
MAX_NEW = 32  # the tiny model has 33 positions: at most 32 new tokens after the start token
SENTENCES = [  # the tiny model stops after 32, 1, 2, 7, 8, 13 and 16 tokens on these
    "How do I reset my online banking password?",
    "Can I change the delivery address after my order has shipped?",
    "Can I get a copy of my invoice in PDF format?",
    "How long does it take for a refund to appear on my credit card?",
    "The food arrived cold and the delivery driver was rude.",
    "Lawmakers passed a bill requiring clearer labels on food packaging.",
    "Shares of the electric carmaker rose sharply after strong quarterly earnings.",
]


def make_tiny_marian(directory: Path) -> Path:
    """A random MarianMTModel + a word-level tokenizer.json, saved as a transformers checkpoint."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    lines = (DATA_DIR / "heldout_sentences.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        lines, trainers.WordLevelTrainer(vocab_size=160, special_tokens=["</s>", "<unk>", "<pad>"])
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    tokenizer.decoder = decoders.WordPiece()
    vocab = tokenizer.get_vocab_size()
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=vocab, decoder_vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=MAX_NEW + 1, init_std=1.0, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=PAD, forced_eos_token_id=EOS,
    )  # fmt: skip
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = 14.0  # EOS wins at varied steps (random weights rarely pick it)
    # As Helsinki-NLP's Marian checkpoints ship it: pad never generated, EOS forced at the length limit.
    model.generation_config = GenerationConfig(
        bad_words_ids=[[PAD]], decoder_start_token_id=PAD, eos_token_id=EOS, forced_eos_token_id=EOS,
        pad_token_id=PAD, max_length=MAX_NEW + 1, num_beams=4,
    )  # fmt: skip
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def catalog_entry_toml(checkpoint: Path) -> str:
    """The catalog entry a user writes for a local checkpoint (docs/translation.md shows the same)."""
    return f"""
[models.{NAME}]
description = "tiny random Marian (test)"
task = "translation"
source = "{checkpoint}"
quantization = "int8-dynamic-matmul-per-channel"

[models.{NAME}.gates]
fp32_max_abs_diff = 1e-2          # this random model's logits reach ~26; measured 2.5e-3
quantized_top1_agreement = 0.50   # random weights at std 1.0 are hostile to INT8: measured 0.58

[models.{NAME}.limits]
max_batch = 8
max_seq_len = 32
max_input_chars = 2000
truncate = false
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_marian(tmp_path_factory.mktemp("tiny-marian-checkpoint"))


@pytest.fixture(scope="module")
def torch_model(checkpoint: Path):  # type: ignore[no-untyped-def]
    from transformers import MarianMTModel

    return MarianMTModel.from_pretrained(str(checkpoint), attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def build(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildResult, Path]:
    root = tmp_path_factory.mktemp("tiny-marian-build")
    catalog = root / "catalog.toml"
    catalog.write_text(catalog_entry_toml(checkpoint), encoding="utf-8")
    entry = load_catalog(catalog)[NAME]
    result = build_model(entry, artifact_dir=root / "artifact", work_dir=root / "work")
    return result, root / "work"


def _client(artifact: Path, cache: Path) -> TestClient:
    settings = Settings(models=str(artifact), cache_dir=cache)
    registry = ModelRegistry()
    assert registry.load(str(artifact), settings) is not None, registry.failures
    return TestClient(create_app(registry, settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(build: tuple[BuildResult, Path], tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """The served (INT8) artifact."""
    return _client(build[0].artifact_dir, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def fp32_client(build: tuple[BuildResult, Path], tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """The fp32 artifact the build staged and judged (same manifest format, no quantization)."""
    return _client(build[1] / "stage-fp32", tmp_path_factory.mktemp("cache32"))


def torch_ids(model, texts: list[str], tokenizer: Tokenizer, *, num_beams: int = 1) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """transformers' generate on the tokenizer's ids, padded by hand: new ids up to and including EOS."""
    encodings = tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    ids = torch.full((len(texts), width), PAD)
    mask = torch.zeros_like(ids)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids)
        mask[row, : len(encoding.ids)] = 1
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, num_beams=num_beams, max_new_tokens=MAX_NEW
        )
    result = []
    for row in out[:, 1:].tolist():
        result.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return result


def predict(client: TestClient, texts: list[str] | str, **parameters: object):  # type: ignore[no-untyped-def]
    return client.post(f"/models/{NAME}/predict", json={"inputs": texts, "parameters": parameters})


# --- the build ------------------------------------------------------------------------------------
def test_build_gates_prove_token_for_token_parity(build: tuple[BuildResult, Path]) -> None:
    manifest = build[0].manifest
    gates = {g.name: g for g in manifest.gates}
    assert all(g.passed for g in gates.values())
    assert gates["heldout_count"].value >= 200
    assert gates["fp32_greedy_token_match"].value == 1.0 and gates["fp32_greedy_token_match"].threshold == 1.0
    assert gates["fp32_beam_token_match"].value == 1.0
    assert gates["fp32_max_abs_diff"].value <= 1e-2
    assert gates["quantized_top1_agreement"].value >= 0.50  # the stated INT8 bound for this random model


def test_artifact_lists_both_graphs_and_the_generation_config(build: tuple[BuildResult, Path]) -> None:
    artifact = build[0].artifact_dir
    manifest = verify_artifact(artifact)
    assert set(manifest.files) == {"model.onnx", "decoder.onnx", "tokenizer.json"}
    assert manifest.task.value == "translation" and manifest.quantization.method == "dynamic"
    assert [t.name for t in manifest.inputs] == ["input_ids", "attention_mask"]
    assert [t.name for t in manifest.outputs][:2] == ["present.0.encoder.key", "present.0.encoder.value"]
    config = manifest.config
    assert config["decoder_file"] == "decoder.onnx" and config["decoder_start_token_id"] == PAD
    assert (
        config["eos_token_ids"] == [EOS] and config["bad_word_ids"] == [PAD] and config["forced_eos_token_ids"] == [EOS]
    )
    assert config["max_new_tokens_limit"] == MAX_NEW
    import onnx

    decoder = onnx.load(str(artifact / "decoder.onnx"), load_external_data=False).graph
    names = [i.name for i in decoder.input]
    assert names[:4] == [
        "input_ids",
        "encoder_attention_mask",
        "past_key_values.0.decoder.key",
        "past_key_values.0.decoder.value",
    ]
    shape = [d.dim_param or d.dim_value for d in decoder.input[2].type.tensor_type.shape.dim]
    assert shape == ["batch", 4, "past_sequence", 8]  # the self-attention cache grows; one token per step
    assert [o.name for o in decoder.output][:2] == ["logits", "present.0.decoder.key"]


# --- the task API ---------------------------------------------------------------------------------
def test_greedy_translation_equals_torch_generate_token_for_token(
    fp32_client: TestClient,
    torch_model,
    checkpoint: Path,
    build: tuple[BuildResult, Path],  # type: ignore[no-untyped-def]
) -> None:
    # GIVEN a batch of sentences of different lengths (padding) WHEN translated over HTTP THEN the strings are
    # exactly the decoded torch outputs, and the runtime's ids equal torch's ids
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    expected = torch_ids(torch_model, SENTENCES, tokenizer)
    assert sorted(len(ids) for ids in expected) == [1, 2, 7, 8, 13, 16, 32]  # rows finish at different steps
    r = predict(fp32_client, SENTENCES, max_new_tokens=MAX_NEW, num_beams=1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "translation" and body["truncated"] == [False] * len(SENTENCES)
    assert body["outputs"] == tokenizer.decode_batch(expected, skip_special_tokens=True)
    assert body["usage"]["input_tokens"] == sum(len(e.ids) for e in tokenizer.encode_batch(SENTENCES))
    ids, _ = fp32_pipeline(build).translate_ids(SENTENCES, TranslationParameters(max_new_tokens=MAX_NEW))
    assert ids == expected


def fp32_pipeline(build: tuple[BuildResult, Path]) -> TranslationPipeline:
    pipeline = pipeline_for(build[1] / "stage-fp32", verify_artifact(build[1] / "stage-fp32"), warmup=False)
    assert isinstance(pipeline, TranslationPipeline)
    return pipeline


def test_translate_reports_finish_reason_and_token_counts(build: tuple[BuildResult, Path]) -> None:
    # what an OpenAI-style completions route needs: the first sentence runs to the limit, the second stops at once
    first, second = fp32_pipeline(build).translate(SENTENCES[:2], TranslationParameters(max_new_tokens=MAX_NEW))
    assert (first.finish_reason, first.completion_tokens, first.prompt_tokens) == ("length", MAX_NEW, 10)
    assert (second.finish_reason, second.completion_tokens, second.text) == ("stop", 1, "")


def test_beam_search_equals_torch_generate(fp32_client: TestClient, torch_model, checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    expected = torch_ids(torch_model, SENTENCES, tokenizer, num_beams=4)
    r = predict(fp32_client, SENTENCES, max_new_tokens=MAX_NEW, num_beams=4)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == tokenizer.decode_batch(expected, skip_special_tokens=True)


def test_output_does_not_depend_on_batch_neighbours(fp32_client: TestClient) -> None:
    alone = [predict(fp32_client, text).json()["outputs"][0] for text in SENTENCES[:3]]
    assert predict(fp32_client, SENTENCES[:3]).json()["outputs"] == alone


def test_served_int8_model_agrees_with_torch_within_the_gate(client: TestClient, torch_model, checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    # GIVEN held-out sentences WHEN translated by the INT8 artifact over HTTP THEN most outputs equal torch's
    # (the build measured 0.78 on all 300; INT8 may flip a near-tie of this random model and diverge after it)
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    lines = (DATA_DIR / "heldout_sentences.txt").read_text(encoding="utf-8").splitlines()
    texts = [line for line in lines if len(tokenizer.encode(line).ids) <= 32][:64]
    same = 0
    for i in range(0, len(texts), 8):
        chunk = texts[i : i + 8]
        expected = tokenizer.decode_batch(torch_ids(torch_model, chunk, tokenizer), skip_special_tokens=True)
        r = predict(client, chunk)
        assert r.status_code == 200
        same += sum(a == b for a, b in zip(r.json()["outputs"], expected, strict=True))
    assert same / len(texts) >= 0.6


def test_max_new_tokens_caps_the_output(fp32_client: TestClient) -> None:
    r = predict(fp32_client, SENTENCES, max_new_tokens=3)
    assert r.status_code == 200
    assert all(len(text.split()) <= 3 for text in r.json()["outputs"])


def test_model_description_and_oip_infer(client: TestClient, fp32_client: TestClient) -> None:
    info = client.get(f"/models/{NAME}").json()
    assert info["task"] == "translation" and {g["name"] for g in info["gates"]} >= {"fp32_greedy_token_match"}
    meta = fp32_client.get(f"/v2/models/{NAME}").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "translation", "datatype": "BYTES", "shape": [-1]}]
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": SENTENCES[:2]}],
            "parameters": {"max_new_tokens": 8}}  # fmt: skip
    r = fp32_client.post(f"/v2/models/{NAME}/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "translation" and out["shape"] == [2]
    assert out["data"] == predict(fp32_client, SENTENCES[:2], max_new_tokens=8).json()["outputs"]


# --- errors ---------------------------------------------------------------------------------------
def test_too_long_input_is_413_not_silently_cut(client: TestClient) -> None:
    long_text = " ".join(["password"] * 40)  # 41 tokens with EOS; the model takes 32
    r = predict(client, [SENTENCES[0], long_text])
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["param"] == "inputs[1]" and "41 tokens" in error["message"] and "limit is 32" in error["message"]
    assert predict(client, "x" * 2001).status_code == 413  # max_input_chars
    assert predict(client, ["hi"] * 9).status_code == 413  # max_batch


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"num_beams": 0}, "parameters.num_beams"),
        ({"num_beams": 9}, "parameters.num_beams"),
        ({"max_new_tokens": 0}, "parameters.max_new_tokens"),
        ({"max_new_tokens": MAX_NEW + 1}, "parameters.max_new_tokens"),
        ({"max_new_tokens": "many"}, "parameters.max_new_tokens"),
        ({"temperature": 0.7}, "parameters.temperature"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(client: TestClient, parameters: dict, field: str) -> None:  # type: ignore[type-arg]
    r = client.post(f"/models/{NAME}/predict", json={"inputs": ["hi"], "parameters": parameters})
    assert r.status_code == 422
    assert r.json()["error"]["param"] == field


def test_non_string_input_is_422(client: TestClient) -> None:
    r = client.post(f"/models/{NAME}/predict", json={"inputs": [1, 2]})
    assert r.status_code == 422


# --- sources --------------------------------------------------------------------------------------
def test_checkpoint_without_tokenizer_json_is_refused_clearly(checkpoint: Path, tmp_path: Path) -> None:
    from functions.contract import Task
    from model_build.sources import load_source
    from model_build.sources.seq2seq import Seq2SeqSourceError

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((checkpoint / "config.json").read_text())
    with pytest.raises(Seq2SeqSourceError, match=r"no tokenizer\.json"):
        load_source(str(bare), task=Task.TRANSLATION)


def test_checkpoint_directory_for_another_task_is_refused(checkpoint: Path) -> None:
    from functions.contract import Task
    from model_build.sources import load_source
    from model_build.sources.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="supported for task 'translation' only"):
        load_source(str(checkpoint), task=Task.SENTENCE_EMBEDDINGS)


def test_generation_options_the_runtime_lacks_are_refused(torch_model) -> None:  # type: ignore[no-untyped-def]
    from model_build.sources.seq2seq import Seq2SeqSourceError, generation_settings

    torch_model.generation_config.no_repeat_ngram_size = 3
    try:
        with pytest.raises(Seq2SeqSourceError, match="no_repeat_ngram_size=3 is not supported"):
            generation_settings(torch_model, max_source_tokens=32)
    finally:
        torch_model.generation_config.no_repeat_ngram_size = 0
    with pytest.raises(Seq2SeqSourceError, match="exceeds the model's 33 positions"):
        generation_settings(torch_model, max_source_tokens=64)


def test_manifest_config_is_the_runtime_contract(build: tuple[BuildResult, Path]) -> None:
    manifest = json.loads((build[0].artifact_dir / "manifest.json").read_text())
    from functions.inference.decoding.search import Seq2SeqConfig

    assert Seq2SeqConfig.model_validate(manifest["config"]).max_beams == 8
