"""OpenAI-compatible routes: embeddings, completions and chat completions (streamed as server-sent events)."""
