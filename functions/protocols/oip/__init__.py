"""The Open Inference Protocol v2 (KServe / Triton), with Triton's binary tensor data extension."""
