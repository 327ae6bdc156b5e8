"""`maas build`: the gates are measured and recorded, a failing gate fails the build, the manifest is exact."""

from __future__ import annotations

import json

import pytest

from functions.contract import sha256_file
from functions.inference.loader import verify_artifact


def gates(artifact):
    return {g["name"]: g for g in json.loads((artifact / "manifest.json").read_text())["gates"]}


def test_embedding_build_meets_issue_bars(built_artifacts):
    g = gates(built_artifacts["minilm-embed"])
    assert all(x["passed"] for x in g.values())
    assert g["heldout_count"]["value"] >= 200
    assert g["fp32_max_abs_diff"]["value"] <= 1e-4
    assert g["quantized_mean_cosine"]["value"] >= 0.99
    assert g["quantized_min_cosine"]["value"] >= 0.98
    assert g["size_ratio"]["value"] <= 0.30


def test_classifier_build_meets_issue_bars(built_artifacts):
    g = gates(built_artifacts["intent-classifier"])
    assert g["quantized_top1_agreement"]["value"] >= 0.99
    assert g["heldout_count"]["value"] >= 200
    assert g["size_ratio"]["value"] <= 0.30


def test_manifest_records_everything_the_runtime_and_infra_need(built_artifacts):
    artifact = built_artifacts["intent-classifier"]
    manifest = verify_artifact(artifact)
    assert manifest.task.value == "text-classification"
    assert [i.name for i in manifest.inputs][:2] == ["input_ids", "attention_mask"]
    assert manifest.inputs[0].shape == ["batch", "sequence"]
    assert manifest.outputs[0].name == "logits" and manifest.outputs[0].shape[1] == 157
    assert manifest.labels is not None and len(manifest.labels) == 157
    assert manifest.quantization.method == "dynamic" and manifest.quantization.per_channel
    assert {"torch", "onnxruntime", "transformers"} <= set(manifest.tool_versions)
    for name, entry in manifest.files.items():
        assert sha256_file(artifact / name) == entry.sha256
    embed = verify_artifact(built_artifacts["minilm-embed"])
    assert embed.pooling == "mean" and embed.normalize and embed.limits.max_seq_len == 256


def test_failing_gate_fails_the_build_with_a_clear_message(tmp_path):
    from model_build.build import build_model
    from model_build.catalog import get_entry
    from model_build.validate import GateError

    entry = get_entry("minilm-embed")
    strict = entry.model_copy(update={"gates": entry.gates.model_copy(update={"quantized_mean_cosine": 0.99999})})
    with pytest.raises(GateError) as failure:
        build_model(strict, artifact_dir=tmp_path / "artifact", work_dir=tmp_path / "work")
    message = str(failure.value)
    assert "quantized_mean_cosine" in message and ">= 0.99999" in message
    assert not (tmp_path / "artifact").exists(), "no artifact may be written when a gate fails"
    assert (tmp_path / "work" / "rejected" / "manifest.json").is_file()  # kept for diagnosis


def test_unknown_preset_and_bad_catalog_are_refused(tmp_path):
    from model_build.catalog import CatalogError, load_catalog

    bad = tmp_path / "catalog.toml"
    bad.write_text('[models.x]\ntask = "sentence-embeddings"\nsource = "a:b"\nquantization = "int3-magic"\n')
    with pytest.raises(CatalogError, match="int3-magic"):
        load_catalog(bad)
    bad.write_text('[models.x]\ntask = "dance"\nsource = "a:b"\n')
    with pytest.raises(CatalogError, match="task"):
        load_catalog(bad)
