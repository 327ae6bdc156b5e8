"""The task API: ``{"inputs": ..., "parameters": {...}}`` in, one output per input out."""
