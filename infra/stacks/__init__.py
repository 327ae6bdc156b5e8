"""Stacks: shared (data, API definition), one per model, and the API stage."""
