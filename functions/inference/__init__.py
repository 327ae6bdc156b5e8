"""Inference: artifact loading, ONNX Runtime sessions, tokenization, one pipeline per task."""
