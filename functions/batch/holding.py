"""What a queue worker owes the messages it holds: each stays invisible while it is worked on (a heartbeat), each
until its own deadline, and the task holding them is protected from scale-in meanwhile.

- :class:`Heartbeat` (a thread): every ``interval_s`` it extends the visibility of every held message whose
  deadline has not passed by the queue's visibility timeout (``ChangeMessageVisibilityBatch``). A message past its
  deadline is no longer extended: it reappears when its last extension runs out and is retried (and, after
  ``maxReceiveCount`` receives, moved to the DLQ), whatever happens to the work in hand.
- :class:`TaskProtection`: ECS task scale-in protection through the ECS agent's endpoint
  (``PUT $ECS_AGENT_URI/task-protection/v1/state``), on while the task holds messages (renewed by the heartbeat
  before it expires), off once it holds none, so the backlog scaling never stops a task mid-job. Outside ECS (no
  ``ECS_AGENT_URI``) it does nothing. A refused call is logged and counted, never fatal: the messages still
  return to the queue if the task is stopped.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions.telemetry import MetricUnit, logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

PROTECTION_PATH = "/task-protection/v1/state"
PROTECTION_MAX_MINUTES = 2880  # ECS's limit for ExpiresInMinutes


class TaskProtection:
    """Scale-in protection of this ECS task, through the agent endpoint (a no-op outside ECS)."""

    def __init__(self, agent_uri: str | None = None, *, timeout_s: float = 5.0) -> None:
        self.agent_uri = agent_uri if agent_uri is not None else os.environ.get("ECS_AGENT_URI", "")
        self.timeout_s = timeout_s
        self.enabled = False
        self.expires_at = 0.0  # monotonic

    def protect(self, seconds: float) -> bool:
        """Protect the task for at least ``seconds`` (rounded up to whole minutes, as ECS takes it)."""
        minutes = min(PROTECTION_MAX_MINUTES, max(1, math.ceil(seconds / 60)))
        if self._put({"ProtectionEnabled": True, "ExpiresInMinutes": minutes}):
            self.enabled, self.expires_at = True, time.monotonic() + minutes * 60
            return True
        return False

    def unprotect(self) -> bool:
        if not self.enabled:
            return True
        if self._put({"ProtectionEnabled": False}):
            self.enabled = False
            return True
        return False

    def _put(self, body: dict[str, Any]) -> bool:
        if not self.agent_uri:
            return False
        request = urllib.request.Request(self.agent_uri.rstrip("/") + PROTECTION_PATH, method="PUT",
                                         data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read() or b"{}")
        except Exception as exc:
            answer = {"error": str(exc)}
        if "failure" in answer or "error" in answer:
            logger.warning("task scale-in protection refused", extra={"request": body, "answer": answer})
            metrics.add_metric(name="TaskProtectionFailures", unit=MetricUnit.Count, value=1)
            return False
        return True


@dataclass
class Held:
    message_id: str
    receipt_handle: str
    deadline: float  # monotonic


class Heartbeat:
    """Keeps held messages invisible until each one's deadline; renews the task's protection while any is held."""

    def __init__(
        self, sqs: SQSClient, queue_url: str, *, visibility_s: int, interval_s: float | None = None,
        protection: TaskProtection | None = None,
    ) -> None:
        self.sqs, self.queue_url, self.visibility_s = sqs, queue_url, visibility_s
        self.interval_s = interval_s if interval_s else max(1.0, visibility_s / 3)
        self.protection = protection or TaskProtection("")
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0  # visibility extensions sent (for tests and logs)

    def hold(self, messages: list[Held]) -> None:
        """Start keeping ``messages`` invisible; protect the task for as long as the latest deadline."""
        with self._lock:
            for message in messages:
                self._held[message.message_id] = message
            latest = max((m.deadline for m in self._held.values()), default=0.0)
        if messages:
            self.protection.protect(latest - time.monotonic() + self.interval_s)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqs-heartbeat", daemon=True)
            self._thread.start()

    def release(self, message_ids: list[str]) -> None:
        """Stop extending these messages (deleted, or failed and left to reappear); unprotect once none is held."""
        with self._lock:
            for message_id in message_ids:
                self._held.pop(message_id, None)
            empty = not self._held
        if empty:
            self.protection.unprotect()

    @property
    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.release(self.held)

    def beat(self) -> None:
        """One round: extend every held message that is still within its deadline."""
        now = time.monotonic()
        with self._lock:
            live = [m for m in self._held.values() if m.deadline > now]
            expired = [m for m in self._held.values() if m.deadline <= now]
        for message in expired:
            logger.warning("message passed its deadline; it returns to the queue",
                           extra={"message_id": message.message_id})
        for start in range(0, len(live), 10):
            batch = live[start:start + 10]
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": self.visibility_s}
                       for i, m in enumerate(batch)]
            try:
                answer = self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)  # type: ignore[arg-type]
                for failure in answer.get("Failed", []):
                    logger.warning("could not extend a message's visibility", extra={"failure": failure})
            except Exception:
                logger.exception("heartbeat failed; held messages may reappear early")
            self.beats += 1
        with self._lock:
            for message in expired:
                self._held.pop(message.message_id, None)
        if live and self.protection.enabled and self.protection.expires_at - now < 2 * self.interval_s:
            self.protection.protect(max(m.deadline for m in live) - now + self.interval_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()
