"""Make the onnxruntime-genai peer of `maas bench smollm2-chat --peers` (run with maas's own python).

onnxruntime-genai's model builder reads a Hugging Face checkpoint folder, and SmolLM2 ships as a GGUF: this
writes the GGUF de-quantized to an fp32 ``LlamaForCausalLM`` checkpoint (the very model the build judges
against, ``model_build.sources.smollm2``), then runs the builder from the genai environment::

    MAAS_ORT_GENAI_PYTHON=/work/peers/genai-venv/bin/python python -m maas_dev.bench.genai_model

into ``build/peers/smollm2-genai-int4`` (the bench's default ``MAAS_ORT_GENAI_MODEL``): ``-p int4 -e cpu``,
the builder's CPU recipe. It re-quantizes the de-quantized weights onto its own 4-bit grid, so it is not the
GGUF's arithmetic; the report shows what that costs in agreement with torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKPOINT = Path("build/peers/smollm2-hf")
MODEL = Path("build/peers/smollm2-genai-int4")


def write_checkpoint(out: Path = CHECKPOINT) -> Path:
    from model_build.sources.smollm2 import gguf_dir, load_llama

    model, tokenizer = load_llama(gguf_dir())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def build(genai_python: str, checkpoint: Path = CHECKPOINT, out: Path = MODEL) -> Path:
    cache = out.parent / "genai-cache"
    subprocess.run(
        [genai_python, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(out),
         "-p", "int4", "-e", "cpu", "-c", str(cache)],
        check=True,
    )  # fmt: skip
    return out


if __name__ == "__main__":
    python = os.environ.get("MAAS_ORT_GENAI_PYTHON")
    if not python:
        raise SystemExit("set MAAS_ORT_GENAI_PYTHON to the python of a venv with onnxruntime-genai (see the docstring)")
    print(build(python, write_checkpoint()), file=sys.stderr)
