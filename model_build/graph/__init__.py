"""Graph surgery on ONNX models: fused encoder and decoder graphs, exact re-packing of quantized weights,
fp32 outlier channels beside INT8 MatMuls. Path-in/path-out or ModelProto-in/out functions."""
