"""Event-driven inference: S3 batch jobs and SQS request queues.

One role per module: ``readers`` (streaming JSONL/CSV/image inputs), ``s3io`` (clients and the streaming
writer), ``idempotency`` (dedupe stores), ``replies`` (allow-listed destinations), ``s3_jobs`` and ``sqs_jobs``
(the two event sources, on the batching core in ``functions.inference.batching``); for objects too large for one
invocation ``chunks`` (the plan's cut), ``chunked_jobs`` (plan, chunk, merge and the failure notice, as the state
machine runs them) and ``concat`` (the ordered merge); ``notify`` (a finished job's EventBridge event);
``worker`` and ``holding`` (the container's queue worker: heartbeat, deadlines, scale-in protection).
"""
