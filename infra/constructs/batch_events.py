"""Batch events for one model: the EventBridge rules on its input prefix, and a job queue with its DLQ.

The batch bucket sends every S3 event to EventBridge (its ``EventBridgeConfiguration``, set once by the shared
stack: no per-model notification resource editing the bucket's configuration, so no read-merge-write race between
model stacks). Each model's rules match ``Object Created`` events of the batch bucket under its own input prefix:

- ``lambda`` models route by size (``functions.contract.batch_plan``: the model's measured rate, its batch
  function's memory and timeout): an object up to ``route_threshold_bytes`` goes to the S3 job function (one
  invocation, as before; Lambda's 2 async retries, then its failure queue); a larger one starts the chunked-job
  state machine. A third rule hands the state machine's failed, timed-out and aborted executions to the chunk
  function, which writes the job's ``failed`` summary. EventBridge's own delivery failures go to the same failure
  queue.
- ``gpu`` models: every object's event goes to the job queue, which the container's worker drains (it has no
  timeout of its own: a heartbeat keeps a long job's message invisible, docs/batch.md).

The queue's visibility timeout is the one :mod:`infra.guards` computed (≥ 6 x the consumer's timeout) and
repeated failures end in a dead-letter queue; every queue here is alarmed on depth > 0.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.contract.batch_plan import BatchSizing
from infra import nag
from infra.config import LambdaDeploy, ModelSpec

S3_ASYNC_RETRIES = 2
S3_MAX_EVENT_AGE = cdk.Duration.hours(6)
FAILED_STATUSES = ["FAILED", "TIMED_OUT", "ABORTED"]


def object_created(bucket_name: str, input_prefix: str, size: list[str] | None = None) -> events.EventPattern:
    """``Object Created`` events of the batch bucket under ``input_prefix`` (and of the given size, if any)."""
    detail_object: dict[str, list[str]] = {"key": events.Match.prefix(input_prefix)}
    if size is not None:
        detail_object["size"] = size
    return events.EventPattern(
        source=["aws.s3"],
        detail_type=["Object Created"],
        detail={"bucket": {"name": [bucket_name]}, "object": detail_object},
    )


class BatchEvents(Construct):
    """Queue + DLQ for one model, and the EventBridge rules that route its uploads to whatever runs them."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ModelSpec,
        batch_bucket_name: str,
        sizing: BatchSizing | None = None,
        s3_function: lambda_.IFunction | None = None,
        sqs_function: lambda_.IFunction | None = None,
        chunk_function: lambda_.IFunction | None = None,
        state_machine: sfn.IStateMachine | None = None,
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
        self.rules: dict[str, events.Rule] = {}
        if isinstance(spec.deploy, LambdaDeploy):
            if None in (s3_function, sqs_function, chunk_function, state_machine, sizing):
                raise ValueError(f"model {spec.name!r}: a lambda target needs its functions, state machine and sizing")
            self._wire_lambda(spec, batch_bucket_name, sizing, s3_function, sqs_function, chunk_function,  # type: ignore[arg-type]
                              state_machine)  # type: ignore[arg-type]
        else:
            self.rules["jobs"] = events.Rule(
                self, "Uploads", description=f"maas {spec.name}: objects under {spec.input_prefix} -> the job queue",
                event_pattern=object_created(batch_bucket_name, spec.input_prefix),
                targets=[targets.SqsQueue(self.queue, dead_letter_queue=self.dead_letter_queue)],
            )

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
        bucket_name: str,
        sizing: BatchSizing,
        s3_function: lambda_.IFunction,
        sqs_function: lambda_.IFunction,
        chunk_function: lambda_.IFunction,
        state_machine: sfn.IStateMachine,
    ) -> None:
        self.failure_queue = _dead_letter_queue(
            self, "S3FailureQueue",
            "This queue is the on-failure destination (a DLQ) of the S3 job function and of the upload rules",
        )
        s3_function.configure_async_invoke(
            retry_attempts=S3_ASYNC_RETRIES,
            max_event_age=S3_MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(self.failure_queue),
        )
        threshold = sizing.route_threshold_bytes
        self.rules["direct"] = events.Rule(
            self, "SmallUploads",
            description=f"maas {spec.name}: objects up to {threshold} bytes under {spec.input_prefix} -> S3 jobs",
            event_pattern=object_created(bucket_name, spec.input_prefix, events.Match.less_than_or_equal(threshold)),
            targets=[targets.LambdaFunction(s3_function, dead_letter_queue=self.failure_queue)],
        )
        self.rules["chunked"] = events.Rule(
            self, "LargeUploads",
            description=f"maas {spec.name}: objects over {threshold} bytes under {spec.input_prefix} -> chunked jobs",
            event_pattern=object_created(bucket_name, spec.input_prefix, events.Match.greater_than(threshold)),
            targets=[targets.SfnStateMachine(state_machine, dead_letter_queue=self.failure_queue)],
        )
        self.rules["failed"] = events.Rule(
            self, "FailedJobs",
            description=f"maas {spec.name}: a chunked job's execution failed -> its failed summary",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"stateMachineArn": [state_machine.state_machine_arn], "status": FAILED_STATUSES},
            ),
            targets=[targets.LambdaFunction(chunk_function, dead_letter_queue=self.failure_queue)],
        )
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
