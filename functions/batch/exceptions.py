"""Errors of the event-driven paths. Each is a MaasError so it carries a code and a message to act on."""

from __future__ import annotations

from functions.errors import InvalidInputError, MaasError, SettingsError


class BatchConfigError(SettingsError):
    """The batch configuration is unsafe or malformed; raised at init, before any event is handled."""

    code = "batch_config_invalid"


class PoisonMessageError(InvalidInputError):
    """A queue message that can never succeed (bad JSON, wrong model, too large): it fails alone."""

    code = "poison_message"


class ReplyRefusedError(InvalidInputError):
    """A ``reply_to`` that is malformed or not on the configured allow-list."""

    code = "reply_to_refused"


class MalformedRecordError(InvalidInputError):
    """One input line or row that cannot be read as a record (bad JSON, missing id or inputs)."""

    code = "malformed_record"


class StorageError(MaasError):
    """S3/SQS could not be reached or refused the call: a fault to retry, not a bad input."""

    status_code = 502
    code = "storage_unavailable"


class MessageInProgressError(MaasError):
    """Another invocation holds this message's idempotency claim: it returns to the queue and is retried."""

    status_code = 409
    code = "message_in_progress"
