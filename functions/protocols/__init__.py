"""The protocols one app speaks, each in its own folder: router, schemas, mapping and error shape.

- :mod:`.task` — the simple task API (``/models/{model}/predict``);
- :mod:`.oip` — the Open Inference Protocol v2 (``/v2``, KServe/Triton, binary tensors);
- :mod:`.openai` — OpenAI-compatible ``/v1`` (embeddings, completions, chat with streaming).

:mod:`.base` holds what they share: the error-shape machinery and the dependencies.
"""
