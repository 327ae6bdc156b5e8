"""GIVEN the GPU service's queue worker on an SQS queue (moto) and the ECS agent's task-protection endpoint (a stub
HTTP server on loopback: moto has no ECS agent) THEN a long job's message stays invisible while it is worked on
(a heartbeat), each message is let go at its own deadline, S3 jobs run one at a time while inference requests
share a run, and the task is protected from scale-in exactly while it holds messages."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import boto3
import pytest
from moto import mock_aws

from functions.batch.holding import Heartbeat, Held, TaskProtection
from functions.batch.worker import QueueWorker
from maas_dev.batch_local import object_created_event

JOB = json.dumps(object_created_event("maas-batch", "inputs/minilm-embed/big.jsonl", etag="e", size=10))


class SlowRunner:
    """Stands in for SqsInferenceRunner: records each call (its messages, its remaining time) and takes ``seconds``
    per S3 job message."""

    def __init__(self, seconds: float = 0.0, fail: set[str] | None = None) -> None:
        self.seconds, self.fail = seconds, fail or set()
        self.calls: list[tuple[list[str], int]] = []
        self.started = threading.Event()

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        bodies = [r["body"] for r in event["Records"]]
        self.calls.append((bodies, context.get_remaining_time_in_millis()))
        self.started.set()
        if any(body == JOB for body in bodies):
            time.sleep(self.seconds)
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                                      if r["body"] in self.fail]}


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def queue(sqs: Any, visibility_s: int) -> str:
    url: str = sqs.create_queue(QueueName=f"jobs-{time.monotonic_ns()}",
                                Attributes={"VisibilityTimeout": str(visibility_s)})["QueueUrl"]
    return url


def visible(sqs: Any, url: str) -> int:
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0)
    return len(found.get("Messages", []))


class Agent(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Agent.calls.append((self.path, body))
        answer = json.dumps({"protection": {"ProtectionEnabled": body["ProtectionEnabled"]}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def agent() -> Iterator[str]:
    """A stand-in for the ECS agent's endpoint ($ECS_AGENT_URI) that records what the worker asks of it."""
    Agent.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_a_long_job_stays_invisible_while_it_is_worked_on_and_is_deleted_once_done(sqs: Any) -> None:
    url = queue(sqs, visibility_s=2)
    sqs.send_message(QueueUrl=url, MessageBody=JOB)
    runner = SlowRunner(seconds=6)
    worker = QueueWorker(runner, sqs, url, budget_s=60, heartbeat_s=0.5)  # type: ignore[arg-type]
    polled = threading.Thread(target=worker.poll_once, kwargs={"wait_seconds": 0})
    polled.start()
    assert runner.started.wait(10)
    seen = []
    while polled.is_alive():  # three times its visibility timeout: another consumer never gets it
        seen.append(visible(sqs, url))
        time.sleep(0.5)
    polled.join()
    assert seen and sum(seen) == 0 and worker.heartbeat.beats >= 6
    time.sleep(2.5)
    assert visible(sqs, url) == 0  # deleted, not merely hidden
    worker.heartbeat.stop()


def test_each_message_is_let_go_at_its_own_deadline(sqs: Any) -> None:
    url = queue(sqs, visibility_s=1)
    sqs.send_message(QueueUrl=url, MessageBody=JOB)
    runner = SlowRunner(seconds=6)
    worker = QueueWorker(runner, sqs, url, budget_s=2, heartbeat_s=0.25)  # type: ignore[arg-type]
    polled = threading.Thread(target=worker.poll_once, kwargs={"wait_seconds": 0})
    polled.start()
    assert runner.started.wait(10)
    assert visible(sqs, url) == 0  # within its deadline: held
    time.sleep(4)  # past its 2 s deadline plus its last 1 s extension: back on the queue, work still in hand
    assert polled.is_alive() and visible(sqs, url) == 1
    polled.join()
    (bodies, remaining_ms), = runner.calls
    assert bodies == [JOB] and 0 < remaining_ms <= 2000  # the job's context ends at the message's own deadline
    worker.heartbeat.stop()


def test_s3_jobs_run_alone_while_requests_share_a_run_and_failures_stay_queued(sqs: Any) -> None:
    url = queue(sqs, visibility_s=30)
    request = json.dumps({"id": "r1", "model": "minilm-embed", "inputs": "hi", "reply_to": "s3://b/replies/"})
    for body in (JOB, request, "{poison", JOB.replace("big", "other")):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    runner = SlowRunner(fail={"{poison"})
    worker = QueueWorker(runner, sqs, url, budget_s=60)  # type: ignore[arg-type]
    assert worker.poll_once(wait_seconds=0) == (3, 1)
    groups = [sorted(bodies) for bodies, _ in runner.calls]
    assert groups[0] == sorted([request, "{poison"]) and sorted(map(tuple, groups[1:])) == sorted(
        [(JOB,), (JOB.replace("big", "other"),)])
    assert worker.heartbeat.held == []
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"  # the poison one, let go
    worker.heartbeat.stop()


def test_the_task_is_protected_from_scale_in_exactly_while_it_holds_messages(sqs: Any, agent: str) -> None:
    url = queue(sqs, visibility_s=30)
    sqs.send_message(QueueUrl=url, MessageBody=JOB)
    runner = SlowRunner(seconds=1)
    worker = QueueWorker(runner, sqs, url, budget_s=600, protection=TaskProtection(agent))  # type: ignore[arg-type]
    polled = threading.Thread(target=worker.poll_once, kwargs={"wait_seconds": 0})
    polled.start()
    assert runner.started.wait(10)
    assert Agent.calls == [("/v1/task-protection/v1/state", {"ProtectionEnabled": True, "ExpiresInMinutes": 11})]
    polled.join()
    assert Agent.calls[-1] == ("/v1/task-protection/v1/state", {"ProtectionEnabled": False})
    assert worker.poll_once(wait_seconds=0) == (0, 0) and len(Agent.calls) == 2  # nothing held: nothing asked
    worker.heartbeat.stop()


def test_protection_is_renewed_before_it_expires_and_refusals_are_not_fatal(sqs: Any, agent: str) -> None:
    url = queue(sqs, visibility_s=30)
    sqs.send_message(QueueUrl=url, MessageBody=JOB)
    (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    protection = TaskProtection(agent)
    heartbeat = Heartbeat(sqs, url, visibility_s=30, interval_s=60, protection=protection)
    heartbeat.hold([Held(message["MessageId"], message["ReceiptHandle"], time.monotonic() + 3600)])
    protection.expires_at = time.monotonic() + 30  # about to run out while the job goes on
    heartbeat.beat()
    assert [body for _, body in Agent.calls] == [{"ProtectionEnabled": True, "ExpiresInMinutes": 61}] * 2
    heartbeat.stop()
    assert Agent.calls[-1][1] == {"ProtectionEnabled": False}
    refused = TaskProtection("http://127.0.0.1:9")  # nothing listens: logged and counted, the work goes on
    assert refused.protect(60) is False and refused.enabled is False
    assert TaskProtection("").protect(60) is False  # outside ECS: nothing to call


def test_a_stopping_worker_finishes_the_job_in_hand_and_hands_the_rest_back_at_once(sqs: Any) -> None:
    url = queue(sqs, visibility_s=60)
    for name in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=JOB.replace("big", name))
    stop = threading.Event()

    class StopsDuringTheFirstJob(SlowRunner):
        def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
            stop.set()  # SIGTERM arrives while the first job runs
            return super().handle(event, context)

    runner = StopsDuringTheFirstJob()
    worker = QueueWorker(runner, sqs, url, budget_s=60)  # type: ignore[arg-type]
    assert worker.poll_once(wait_seconds=0, stop=stop) == (1, 0)
    assert len(runner.calls) == 1  # the job in hand finished; the other two were not started ...
    assert visible(sqs, url) == 2  # ... and are back on the queue now, not in 60 s
    worker.heartbeat.stop()
