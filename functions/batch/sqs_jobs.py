"""SQS inference: ``{"id", "model", "inputs", "parameters", "reply_to"}`` → a result at ``reply_to``.

Two phases per batch of messages:

1. **Inference, batched.** Every message is parsed and checked (JSON, schema, model, allow-listed
   ``reply_to``); the valid ones are packed into as few ORT runs as the model's ``max_batch`` allows
   (``engine.run_items``). A message that can never succeed — bad JSON, unknown model, too large,
   refused ``reply_to``, input the model rejects — fails alone, as a poison message.
2. **Delivery, per message,** inside Powertools' ``BatchProcessor``: a failed message (poison, or a
   transient delivery fault) is reported in ``batchItemFailures``, so only it returns to the queue
   and, after ``maxReceiveCount``, to the DLQ. Nothing is dropped: every message either has its
   result delivered or is reported failed. FIFO queues use ``SqsFifoPartialProcessor`` so a failure
   holds back the rest of its message group, preserving order.

Work is idempotent per ``messageId`` when a store is configured: phase 1 claims each message in the
store before inferring it (Powertools' persistence layer: in progress → completed, or released on
failure), so an at-least-once redelivery of a delivered message neither runs the model again nor sends
a second reply, and a copy that arrives while another invocation holds the claim returns to the queue.

Records are tracked by their place in the batch, never by ``messageId`` alone: a record repeated within one
batch (same id, same body) shares its first copy's outcome; a second record that reuses an id with another
body is refused (poison), so that id is reported failed — no record is ever reported delivered without its
reply.

A message whose body is an S3 notification (a bucket notifying a queue) or EventBridge's ``Object Created`` event
(the batch bucket's EventBridge rule, as infra wires GPU models) runs that S3 batch job instead (``s3_jobs``); its
failure fails the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic_core
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer, IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemAlreadyExistsError
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS
from pydantic import ValidationError

from functions.batch.exceptions import MessageInProgressError, PoisonMessageError, ReplyRefusedError
from functions.batch.idempotency import persistence_layer
from functions.batch.replies import Destination, QueueDestination, ReplyAllowList, S3Destination, allowlist_for
from functions.batch.s3_events import is_object_created
from functions.batch.s3_jobs import S3JobRunner
from functions.batch.types import InferenceReply, InferenceRequest
from functions.errors import MaasError
from functions.inference.batching import RunStats, WorkItem, run_items
from functions.telemetry import MetricUnit, logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from functions.inference.registry import ModelRegistry
    from functions.settings import Settings


@dataclass
class Prepared:
    """A message after phase 1: a reply to deliver, or the error that fails it."""

    reply: InferenceReply | None = None
    destination: Destination | None = None
    error: Exception | None = None
    s3_event: dict[str, Any] | None = None  # an S3 notification delivered through the queue
    delivered: str | None = None  # an earlier delivery of this message completed: its destination
    claimed: bool = False  # this invocation holds the message's idempotency claim
    duplicate_of: int | None = None  # the same message earlier in this batch: this record shares its outcome
    outcome: str | Exception | None = None  # set once the record is handled: its destination, or its failure


class MessageClaims:
    """Per-``messageId`` claims in the idempotency store (DynamoDB or S3 records), taken before inference."""

    _IN_PROGRESS_FALLBACK_MS = 900_000  # no Lambda context (local runs): Lambda's longest invocation

    def __init__(self, store: BasePersistenceLayer, ttl_seconds: int, context: Any) -> None:
        config = IdempotencyConfig(event_key_jmespath="message_id", expires_after_seconds=ttl_seconds)
        store.configure(config, key_prefix="maas-sqs-reply")
        self.store, self.context = store, context

    def claim(self, message_id: str) -> str | None:
        """Take the claim (None), or the destination of an earlier completed delivery.

        Raises ``MessageInProgressError`` when another invocation holds the claim."""
        data = {"message_id": message_id}
        remaining = self._IN_PROGRESS_FALLBACK_MS
        if self.context is not None and hasattr(self.context, "get_remaining_time_in_millis"):
            remaining = int(self.context.get_remaining_time_in_millis())
        try:
            self.store.save_inprogress(data=data, remaining_time_in_millis=remaining)
            return None
        except IdempotencyItemAlreadyExistsError as exc:
            record = exc.old_data_record or self.store.get_record(data=data)
        if record is not None and record.status == STATUS_CONSTANTS["COMPLETED"]:
            found = record.response_json_as_dict() or {}
            return str(found.get("destination", "")) if isinstance(found, dict) else str(found)
        raise MessageInProgressError(f"message {message_id} is being processed by another invocation; it returns "
                                     "to the queue and is retried after its visibility timeout")

    def complete(self, message_id: str, destination: str) -> None:
        self.store.save_success(data={"message_id": message_id}, result={"destination": destination})

    def release(self, message_id: str, error: Exception) -> None:
        try:
            self.store.delete_record(data={"message_id": message_id}, exception=error)
        except Exception:  # the claim then expires on its own; the message is still reported failed
            logger.exception("could not release an idempotency claim", extra={"message_id": message_id})


class SqsInferenceRunner:
    def __init__(
        self, settings: Settings, registry: ModelRegistry, *, s3: S3Client, sqs: SQSClient, dynamodb: Any = None
    ) -> None:
        self.settings, self.registry = settings, registry
        self.s3, self.sqs, self.dynamodb = s3, sqs, dynamodb
        self.allowlist: ReplyAllowList = allowlist_for(settings)
        self.s3_jobs = S3JobRunner(settings, registry, s3, dynamodb)

    def handle(self, event: dict[str, Any], context: Any = None) -> PartialItemFailureResponse:
        raw_records = event.get("Records", [])
        records = [SQSRecord(raw) for raw in raw_records]
        claims = self._claims(context)
        prepared = self.prepare(records, claims)
        places = {id(raw): index for index, raw in enumerate(raw_records)}  # the processor hands back these dicts

        def record_handler(record: SQSRecord) -> str:
            item = prepared[places[id(record.raw_event)]]
            try:
                destination = self._handle_one(record, item, prepared, claims, context)
            except Exception as exc:
                item.outcome = exc
                raise
            item.outcome = destination
            return destination

        fifo = bool(records) and records[0].event_source_arn.endswith(".fifo")
        processor = SqsFifoPartialProcessor(skip_group_on_error=True) if fifo else BatchProcessor(EventType.SQS)
        return process_partial_response(event, record_handler, processor, context)

    def _handle_one(
        self, record: SQSRecord, item: Prepared, prepared: list[Prepared], claims: MessageClaims | None, context: Any
    ) -> str:
        """Phase 2 for one record: deliver its reply (or run its S3 job); raise to report it failed."""
        if item.duplicate_of is not None:  # a copy of an earlier record of this batch: the same outcome
            outcome = prepared[item.duplicate_of].outcome
            if isinstance(outcome, Exception):
                raise outcome
            if outcome is None:
                raise MessageInProgressError(f"message {record.message_id} appears twice in this batch and its "
                                             "first copy was not handled; it returns to the queue")
            metrics.add_metric(name="MessagesDuplicate", unit=MetricUnit.Count, value=1)
            return outcome
        try:
            if item.error is not None:
                raise item.error
            if item.s3_event is not None:
                jobs = self.s3_jobs.handle(item.s3_event, context)
                return f"{len(jobs['jobs'])} S3 job(s)"
            if item.delivered is not None:
                metrics.add_metric(name="MessagesDuplicate", unit=MetricUnit.Count, value=1)
                return item.delivered
            assert item.reply is not None and item.destination is not None
            destination = self.deliver(message_id=record.message_id, reply=item.reply,
                                       destination=item.destination)
            if claims is not None and item.claimed:
                claims.complete(record.message_id, destination)
        except Exception as exc:
            if claims is not None and item.claimed:
                claims.release(record.message_id, exc)
            logger.warning("message failed; it returns to the queue", extra=_failure_log(record, exc))
            metrics.add_metric(name="MessagesFailed", unit=MetricUnit.Count, value=1)
            raise
        metrics.add_metric(name="MessagesDelivered", unit=MetricUnit.Count, value=1)
        return destination

    def prepare(self, records: list[SQSRecord], claims: MessageClaims | None = None) -> list[Prepared]:
        """Phase 1: validate every message, claim it, and run the claimed ones through the model in few ORT runs.

        One entry per record, in the records' order."""
        prepared: list[Prepared] = []
        by_model: dict[str, list[tuple[int, str, InferenceRequest]]] = {}
        first_copy: dict[str, int] = {}
        for index, record in enumerate(records):
            earlier = first_copy.setdefault(record.message_id, index)
            if earlier != index:
                prepared.append(self._repeat(record, records[earlier], earlier))
                continue
            try:
                body = _json_body(record)
                if is_s3_event(body):
                    prepared.append(Prepared(s3_event=body))
                    continue
                request, destination = self._parse(body)
            except MaasError as exc:
                prepared.append(Prepared(error=exc))
                continue
            except Exception as exc:  # a parsing bug must still fail only this message, never the batch
                logger.exception("unexpected error reading a message", extra={"message_id": record.message_id})
                prepared.append(Prepared(error=exc))
                continue
            slot = Prepared(destination=destination)
            prepared.append(slot)
            if claims is not None:
                try:
                    slot.delivered = claims.claim(record.message_id)
                except Exception as exc:  # in progress elsewhere, or the store is unreachable: retry later
                    slot.error = exc
                    continue
                if slot.delivered is not None:  # a redelivery of a delivered message: no second inference
                    continue
                slot.claimed = True
            by_model.setdefault(request.model, []).append((index, record.message_id, request))
        for model, requests in by_model.items():
            try:
                self._infer(model, requests, prepared)
            except Exception as exc:  # a system fault: every message of this model fails and is retried
                logger.exception("inference failed for a batch of messages", extra={"model": model})
                for index, _, _ in requests:
                    prepared[index].error = exc
        return prepared

    @staticmethod
    def _repeat(record: SQSRecord, first: SQSRecord, first_index: int) -> Prepared:
        """A record whose messageId an earlier record of the batch carries: a copy, or a conflicting message."""
        if record.body == first.body:
            return Prepared(duplicate_of=first_index)
        return Prepared(error=PoisonMessageError(
            f"messageId {record.message_id} is on two records with different bodies in this batch; each message "
            "needs its own id (the second record was not processed)"))

    def _parse(self, body: Any) -> tuple[InferenceRequest, Destination]:
        try:
            request = InferenceRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise PoisonMessageError(f"message {where}: {first['msg']}", param=where) from exc
        destination = self.allowlist.resolve(request.reply_to)  # never write where configuration does not allow
        if isinstance(destination, S3Destination):
            self._refuse_reserved(destination.bucket, destination.key_for(request.id))
        self.registry.get(request.model)  # ModelNotFoundError: this function does not serve that model
        return request, destination

    def _refuse_reserved(self, bucket: str, key: str) -> None:
        """A reply may share a prefix with batch outputs, but never overwrite a summary or a dedupe record."""
        settings = self.settings
        if settings.batch_bucket and bucket != settings.batch_bucket:
            return
        if key.startswith(settings.idempotency_prefix) or key.endswith(".summary.json") \
                or key.startswith(settings.input_prefix):
            raise ReplyRefusedError(f"reply key s3://{bucket}/{key} is reserved for batch jobs; use another id "
                                    "or reply_to", param="reply_to")

    def _infer(
        self, model: str, requests: list[tuple[int, str, InferenceRequest]], prepared: list[Prepared]
    ) -> None:
        pipeline = self.registry.get(model)
        stats = RunStats()
        items = [WorkItem(request.inputs, request.parameters) for _, _, request in requests]
        for (index, message_id, request), outcome in zip(requests, run_items(pipeline, items, stats), strict=True):
            slot = prepared[index]
            if outcome.error is not None:  # the model refused this message's inputs: it fails alone
                slot.error = outcome.error
                continue
            slot.reply = InferenceReply(
                id=request.id, model=pipeline.name, model_version=pipeline.manifest.version,
                outputs=outcome.outputs, truncated=outcome.truncated, message_id=message_id,
            )
        metrics.add_metric(name="PredictCalls", unit=MetricUnit.Count, value=stats.predict_calls)

    def _claims(self, context: Any) -> MessageClaims | None:
        store = persistence_layer(self.settings, bucket=self.settings.batch_bucket or None, s3=self.s3,
                                  dynamodb=self.dynamodb)
        return None if store is None else MessageClaims(store, self.settings.idempotency_ttl_seconds, context)

    def deliver(self, *, message_id: str, reply: InferenceReply, destination: Destination) -> str:
        """Write one reply; any exception fails the message so it is retried, never dropped."""
        body = pydantic_core.to_json(reply).decode()
        if isinstance(destination, QueueDestination):
            extra: dict[str, str] = {}
            if destination.fifo:
                extra = {"MessageGroupId": reply["id"], "MessageDeduplicationId": message_id}
            self.sqs.send_message(QueueUrl=destination.url, MessageBody=body, **extra)  # type: ignore[arg-type]
        else:
            self.s3.put_object(Bucket=destination.bucket, Key=destination.key_for(reply["id"]),
                               Body=body.encode(), ContentType="application/json")
        return str(destination)


def _json_body(record: SQSRecord) -> Any:
    try:
        return json.loads(record.body)
    except json.JSONDecodeError as exc:
        raise PoisonMessageError(f"message body is not valid JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError:
        raise PoisonMessageError("message body is nested too deeply to read; flatten its inputs") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise PoisonMessageError(f"message body could not be read: {str(exc).split(';')[0]}") from None


def is_s3_event(body: Any) -> bool:
    """An S3 notification (or its test event) or EventBridge's Object Created event: a message that is a job."""
    if not isinstance(body, dict):
        return False
    if body.get("Event") == "s3:TestEvent" or is_object_created(body):  # the test event: sent once, when configured
        return True
    records = body.get("Records")
    return isinstance(records, list) and bool(records) and isinstance(records[0], dict) and \
        records[0].get("eventSource") == "aws:s3"


def _failure_log(record: SQSRecord, error: Exception) -> dict[str, Any]:
    return {
        "message_id": record.message_id,
        "receive_count": record.attributes.approximate_receive_count,
        "error_type": type(error).__name__,
        "error_code": getattr(error, "code", None),
        "error": getattr(error, "message", None) or str(error),
    }
