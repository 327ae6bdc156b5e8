"""One FastAPI app: the task API, Open Inference Protocol v2 and OpenAI-compatible routes."""
