"""The HTTP app around the protocols: request ids, metrics, API keys, admission control, body limits."""
