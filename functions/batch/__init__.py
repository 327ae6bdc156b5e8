"""Event-driven inference: S3 batch jobs and SQS request queues.

One role per module: ``settings`` (configuration, refused early when unsafe), ``engine`` (chunked
inference with per-record isolation), ``readers`` (streaming JSONL/CSV/image inputs), ``s3io``
(clients and the streaming writer), ``idempotency`` (dedupe stores), ``replies`` (allow-listed
destinations), ``s3_jobs`` and ``sqs_jobs`` (the two event sources), ``local`` (moto end-to-end).
"""
