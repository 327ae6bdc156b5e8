"""A long-running queue worker for containers (the GPU service): the SQS handler's logic, polled.

Lambda's event source mapping does three things for ``functions.handlers.sqs``: long-polls the
queue, turns messages into an event, and deletes the messages the handler did not report failed.
This module does the same in a loop, so a container gets the identical guarantees: a message is
deleted only after its result was delivered (or its S3 job completed); a failed one is left to
reappear after the visibility timeout and, after ``maxReceiveCount``, to move to the DLQ.

    MAAS_QUEUE_URL=https://sqs.../maas-jobs MAAS_MODELS=... python -m functions.batch.worker

SIGTERM (ECS stopping the task) finishes the batch in hand, then exits.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from functions.batch.s3io import dynamodb_client, s3_client, sqs_client
from functions.batch.sqs_jobs import SqsInferenceRunner
from functions.context import DeadlineContext
from functions.settings import get_settings
from functions.telemetry import logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef


class QueueWorker:
    def __init__(self, runner: SqsInferenceRunner, sqs: SQSClient, queue_url: str) -> None:
        self.runner, self.sqs, self.queue_url = runner, sqs, queue_url
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn", "VisibilityTimeout"])
        self.queue_arn = attributes["Attributes"]["QueueArn"]
        self.visibility_s = int(attributes["Attributes"].get("VisibilityTimeout", "30"))
        self.region = self.queue_arn.split(":")[3]

    def poll_once(self, *, max_messages: int = 10, wait_seconds: int = 20) -> tuple[int, int]:
        """Receive one batch, process it, delete what succeeded; returns (succeeded, failed)."""
        started = time.monotonic()
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0, 0
        event = {"Records": [self._record(m) for m in messages]}
        context = DeadlineContext(self.visibility_s - (time.monotonic() - started), function_name="maas-worker")
        try:
            response = self.runner.handle(event, context)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        except BatchProcessingError:  # every message failed: all stay on the queue
            failed = {m["MessageId"] for m in messages}
        finally:
            metrics.flush_metrics()
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
            result = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)  # type: ignore[arg-type]
            for failure in result.get("Failed", []):  # redelivered later; idempotency stops a second reply
                logger.warning("could not delete a processed message", extra={"failure": failure})
        return len(done), len(failed)

    def _record(self, message: MessageTypeDef) -> dict[str, Any]:
        """A received message in the shape Lambda's SQS event gives the handler."""
        return {
            "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})), "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""), "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn, "awsRegion": self.region,
        }

    def run(self, stop: threading.Event, *, max_messages: int = 10, wait_seconds: int = 20) -> None:
        while not stop.is_set():
            try:
                self.poll_once(max_messages=max_messages, wait_seconds=wait_seconds)
            except Exception:  # keep serving; the messages in hand reappear after their visibility timeout
                logger.exception("queue worker batch failed")
                stop.wait(1.0)


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
    QueueWorker(runner, sqs, settings.queue_url).run(
        stop, max_messages=settings.max_messages, wait_seconds=settings.wait_seconds)


if __name__ == "__main__":
    main()
