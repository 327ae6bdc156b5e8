"""Batch events for one model: the S3 notification on ``inputs/<name>/`` and a job queue with its DLQ.

For a ``lambda`` model, S3 invokes the S3 function directly (failed events go to a failure queue after
Lambda's async retries) and the SQS function consumes the job queue with ``reportBatchItemFailures``
on. For a ``gpu`` model, S3 notifications land in the job queue and the container's queue worker
consumes it. Either way the queue's visibility timeout is the one :mod:`infra.guards` computed
(≥ 6 x the consumer's timeout) and repeated failures end in a dead-letter queue.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from infra.config import LambdaDeploy, ModelSpec

S3_ASYNC_RETRIES = 2
S3_MAX_EVENT_AGE = cdk.Duration.hours(6)


class BatchEvents(Construct):
    """Queue + DLQ for one model, wired to its S3 input prefix and to whatever consumes the jobs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ModelSpec,
        batch_bucket: s3.IBucket,
        s3_function: lambda_.IFunction | None = None,
        sqs_function: lambda_.IFunction | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = _dead_letter_queue(
            self, "DeadLetterQueue", "This queue is itself the dead-letter queue of the model's job queue"
        )
        self.queue = sqs.Queue(
            self,
            "JobQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=cdk.Duration.seconds(spec.queue_visibility_s),
            retention_period=cdk.Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=spec.deploy.max_receive_count
            ),
        )
        self.failure_queue: sqs.Queue | None = None
        watched = s3.NotificationKeyFilter(prefix=spec.input_prefix)
        if isinstance(spec.deploy, LambdaDeploy):
            if s3_function is None or sqs_function is None:
                raise ValueError(f"model {spec.name!r}: a lambda target needs its S3 and SQS functions")
            self._wire_lambda(spec, batch_bucket, watched, s3_function, sqs_function)
        else:
            batch_bucket.add_event_notification(s3.EventType.OBJECT_CREATED, s3n.SqsDestination(self.queue), watched)

    @property
    def dead_letter_queues(self) -> list[sqs.IQueue]:
        """Every queue whose depth > 0 means lost work: the DLQ and, for Lambda, the S3 failure queue."""
        queues: list[sqs.IQueue] = [self.dead_letter_queue]
        if self.failure_queue is not None:
            queues.append(self.failure_queue)
        return queues

    def _wire_lambda(
        self,
        spec: ModelSpec,
        bucket: s3.IBucket,
        watched: s3.NotificationKeyFilter,
        s3_function: lambda_.IFunction,
        sqs_function: lambda_.IFunction,
    ) -> None:
        self.failure_queue = _dead_letter_queue(
            self, "S3FailureQueue", "This queue is the on-failure destination (a DLQ) of the S3-triggered function"
        )
        s3_function.configure_async_invoke(
            retry_attempts=S3_ASYNC_RETRIES,
            max_event_age=S3_MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(self.failure_queue),
        )
        bucket.add_event_notification(s3.EventType.OBJECT_CREATED, s3n.LambdaDestination(s3_function), watched)
        sqs_function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=spec.deploy.batch_size,
                max_batching_window=(
                    cdk.Duration.seconds(spec.deploy.batching_window_s) if spec.deploy.batching_window_s else None
                ),
                report_batch_item_failures=True,
                max_concurrency=spec.deploy.batch_max_concurrency if isinstance(spec.deploy, LambdaDeploy) else None,
            )
        )


def _dead_letter_queue(scope: Construct, construct_id: str, role: str) -> sqs.Queue:
    """A queue where failed work waits 14 days for inspection or redrive (alarmed on depth > 0)."""
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=cdk.Duration.days(14),
    )
    nag.acknowledge(queue, "AwsSolutions-SQS3", role)
    return queue
