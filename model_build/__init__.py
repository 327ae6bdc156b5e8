"""maas build: PyTorch model → ONNX → optimized → quantized → validated artifact → S3."""

from pathlib import Path

# Held-out and calibration texts, ImageNet class names: what the gates (and the benchmarks) measure on.
DATA_DIR = Path(__file__).resolve().parent / "data"
