"""Other encoder-decoder families export and search exactly like transformers (tiny random models).

Marian is covered end to end in tests/functional/test_translation.py; BART learns its positions and T5
keeps its cross-attention elsewhere and uses relative position buckets, so they take other code paths.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from functions.inference.loader import verify_artifact
from functions.inference.pipelines.seq2seq import TranslationPipeline
from functions.inference.registry import pipeline_for
from model_build.catalog import CatalogEntry
from model_build.package import write_artifact
from model_build.quantize import get_preset
from model_build.recipes.seq2seq import Seq2SeqRecipe
from model_build.sources import load_source
from model_build.sources.seq2seq import torch_generate

pytestmark = pytest.mark.slow
TEXTS = ["How do I reset my online banking password?", "Hello", "The food arrived cold.", "thanks a lot"]


def _tokenizer(eos: int) -> Tokenizer:
    specials = ["<pad>", "</s>"] if eos == 1 else ["</s>", "<unk>", "<pad>"]
    tokenizer = Tokenizer(models.WordLevel(unk_token=specials[-1]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(TEXTS * 3, trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return tokenizer


def _bart():  # type: ignore[no-untyped-def]
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        init_std=0.5, pad_token_id=2, eos_token_id=0, bos_token_id=1, decoder_start_token_id=2, forced_eos_token_id=0,
    )  # fmt: skip
    return BartForConditionalGeneration(config), 0


def _t5():  # type: ignore[no-untyped-def]
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, initializer_factor=3.0,
    )  # fmt: skip
    return T5ForConditionalGeneration(config), 1


@pytest.mark.parametrize("family", [_bart, _t5], ids=["bart", "t5"])
def test_family_greedy_and_beam_equal_transformers(family, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model, eos = family()
    model.eval().save_pretrained(tmp_path / "ckpt")
    _tokenizer(eos).save(str(tmp_path / "ckpt" / "tokenizer.json"))
    entry = CatalogEntry.model_validate(
        {"name": "tiny", "task": "translation", "source": str(tmp_path / "ckpt"), "quantization": "fp32",
         "limits": {"max_seq_len": 32}}
    )  # fmt: skip
    source = load_source(entry.source, task=entry.task)
    recipe = Seq2SeqRecipe(entry, source, tmp_path / "work")
    recipe.export()
    files = recipe.artifact_files(recipe.fp32_dir)
    write_artifact(tmp_path / "art", entry=entry, files=files, quantization=get_preset("fp32").record(),
                   fields=recipe.manifest_fields())  # fmt: skip
    pipeline = pipeline_for(tmp_path / "art", verify_artifact(tmp_path / "art"), warmup=False)
    assert isinstance(pipeline, TranslationPipeline)
    batch = pipeline.encoder.encode(TEXTS, truncate=False)
    feeds = {"input_ids": torch.from_numpy(batch.input_ids), "attention_mask": torch.from_numpy(batch.attention_mask)}
    for beams in (1, 3):
        expected = torch_generate(source.module, feeds, max_new_tokens=16, num_beams=beams)  # type: ignore[arg-type]
        assert pipeline.generate(batch, max_new_tokens=16, num_beams=beams) == expected
