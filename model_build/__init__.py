"""maas build: PyTorch model → ONNX → optimized → quantized → validated artifact → S3."""
