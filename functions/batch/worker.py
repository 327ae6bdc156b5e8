"""A long-running queue worker for containers (the GPU service): the SQS handler's logic, polled.

Lambda's event source mapping does three things for ``functions.handlers.sqs``: long-polls the
queue, turns messages into an event, and deletes the messages the handler did not report failed.
This module does the same in a loop, so a container gets the identical guarantees: a message is
deleted only after its result was delivered (or its S3 job completed); a failed one is left to
reappear and, after ``maxReceiveCount``, to move to the DLQ.

What a container owes its messages beyond that (:mod:`functions.batch.holding`):

- **each message its own deadline**: ``MAAS_MESSAGE_BUDGET_S`` from when it was received (infra: the model's
  ``batch_timeout_s``; unset: the queue's visibility timeout). An S3 job message (a whole object, possibly
  large) runs alone with a context that ends at its own deadline; inference requests, which take milliseconds,
  run together (packed into few model runs) with the earliest of theirs;
- **a heartbeat**: while a message is worked on its visibility is extended, so a long job is neither run twice
  nor sent to the DLQ for being long; past its deadline it is let go;
- **scale-in protection**: the task is protected while it holds messages, so the backlog scaling (visible +
  in flight per task) never stops it mid-job. SIGTERM (a deploy, a stopped task) finishes the group in hand,
  hands the messages it has not started back to the queue at once, then exits.

    MAAS_QUEUE_URL=https://sqs.../maas-jobs MAAS_MODELS=... python -m functions.batch.worker
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from functions.batch.holding import Heartbeat, Held, TaskProtection
from functions.batch.s3io import dynamodb_client, s3_client, sqs_client
from functions.batch.sqs_jobs import SqsInferenceRunner, is_s3_event
from functions.context import DeadlineContext
from functions.settings import get_settings
from functions.telemetry import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef


class QueueWorker:
    def __init__(
        self, runner: SqsInferenceRunner, sqs: SQSClient, queue_url: str, *, budget_s: float = 0,
        heartbeat_s: float = 0, protection: TaskProtection | None = None,
    ) -> None:
        self.runner, self.sqs, self.queue_url = runner, sqs, queue_url
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn", "VisibilityTimeout"])
        self.queue_arn = attributes["Attributes"]["QueueArn"]
        self.visibility_s = int(attributes["Attributes"].get("VisibilityTimeout", "30"))
        self.region = self.queue_arn.split(":")[3]
        self.budget_s = budget_s or self.visibility_s
        self.heartbeat = Heartbeat(sqs, queue_url, visibility_s=self.visibility_s, interval_s=heartbeat_s or None,
                                   protection=protection or TaskProtection())

    def poll_once(
        self, *, max_messages: int = 10, wait_seconds: int = 20, stop: threading.Event | None = None
    ) -> tuple[int, int]:
        """Receive one batch, work on it, delete what succeeded; returns (succeeded, failed).

        Once ``stop`` is set (SIGTERM), the group in hand finishes and the messages not started are handed back at
        once (visibility 0), for another task to take."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0, 0
        received = time.monotonic()
        deadlines = {m["MessageId"]: received + self.budget_s for m in messages}
        self.heartbeat.hold([Held(m["MessageId"], m["ReceiptHandle"], deadlines[m["MessageId"]]) for m in messages])
        succeeded = failed = 0
        groups = _groups(messages)
        try:
            while groups and not (stop is not None and stop.is_set()):
                group = groups.pop(0)
                done, bad = self._work(group, min(deadlines[m["MessageId"]] for m in group))
                succeeded, failed = succeeded + done, failed + bad
            self._hand_back([m for group in groups for m in group])
        finally:
            self.heartbeat.release([m["MessageId"] for m in messages])
            metrics.flush_metrics()
        return succeeded, failed

    def _work(self, messages: list[MessageTypeDef], deadline: float) -> tuple[int, int]:
        """One group under one deadline; the group's messages are deleted or let go before the next starts."""
        event = {"Records": [self._record(m) for m in messages]}
        context = DeadlineContext(max(0.0, deadline - time.monotonic()), function_name="maas-worker")
        try:
            response = self.runner.handle(event, context)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        except BatchProcessingError:  # every message failed: all stay on the queue
            failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
            result = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)  # type: ignore[arg-type]
            for failure in result.get("Failed", []):  # redelivered later; idempotency stops a second reply
                logger.warning("could not delete a processed message", extra={"failure": failure})
        self.heartbeat.release([m["MessageId"] for m in messages])
        return len(done), len(messages) - len(done)

    def _hand_back(self, messages: list[MessageTypeDef]) -> None:
        """Messages this task will not start (it is stopping): visible again now, not after their timeout."""
        for start in range(0, len(messages), 10):
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                       for i, m in enumerate(messages[start:start + 10])]
            try:
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)  # type: ignore[arg-type]
            except Exception:  # they reappear after their visibility timeout instead
                logger.exception("could not hand messages back to the queue")
        if messages:
            logger.info("stopping: messages handed back to the queue", extra={"count": len(messages)})

    def _record(self, message: MessageTypeDef) -> dict[str, Any]:
        """A received message in the shape Lambda's SQS event gives the handler."""
        return {
            "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})), "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""), "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn, "awsRegion": self.region,
        }

    def run(self, stop: threading.Event, *, max_messages: int = 10, wait_seconds: int = 20) -> None:
        try:
            while not stop.is_set():
                try:
                    self.poll_once(max_messages=max_messages, wait_seconds=wait_seconds, stop=stop)
                except Exception:  # keep serving; the messages in hand reappear once let go
                    logger.exception("queue worker batch failed")
                    stop.wait(1.0)
        finally:
            self.heartbeat.stop()


def _groups(messages: list[MessageTypeDef]) -> list[list[MessageTypeDef]]:
    """Inference requests together (one packed run), then each S3 job message alone, in the order received."""
    jobs: list[MessageTypeDef] = []
    requests: list[MessageTypeDef] = []
    for message in messages:
        (jobs if _is_job(message["Body"]) else requests).append(message)
    return ([requests] if requests else []) + [[job] for job in jobs]


def _is_job(body: str) -> bool:
    try:
        return is_s3_event(json.loads(body))
    except ValueError:
        return False


def main() -> None:
    from functions.batch.replies import allowlist_for
    from functions.errors import SettingsError
    from functions.inference.registry import get_registry

    settings = get_settings()
    if not settings.queue_url:
        raise SettingsError("MAAS_QUEUE_URL is not set: the queue worker needs the URL of the queue it polls")
    allowlist_for(settings)  # an unsafe reply layout stops the worker before it takes a message
    s3, sqs = s3_client(settings.expected_bucket_owner), sqs_client()
    runner = SqsInferenceRunner(settings, get_registry(), s3=s3, sqs=sqs,
                                dynamodb=dynamodb_client() if settings.idempotency_table else None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logger.info("queue worker started", extra={"queue_url": settings.queue_url})
    QueueWorker(runner, sqs, settings.queue_url, budget_s=settings.message_budget_s,
                heartbeat_s=settings.heartbeat_s).run(
        stop, max_messages=settings.max_messages, wait_seconds=settings.wait_seconds)


if __name__ == "__main__":
    main()
