"""Every finished S3 job is announced: one EventBridge event per job, whichever route ran it.

``source = maas.batch``, ``detail-type = Batch Job Finished``; the detail is the summary's headline (status,
model, input, output, summary key, counts, errors by code, the error when it failed or was rejected). An
uploader subscribes with a rule on the bus (``MAAS_JOB_EVENT_BUS``, the account's default bus as deployed), e.g.
``{"source": ["maas.batch"], "detail": {"input": {"key": [{"prefix": "inputs/minilm-embed/"}]}}}``.

Announcing is best effort: the summary object is the record of the job; an announcement that cannot be sent is
logged (``job announcement failed``) and counted (``JobAnnouncementsFailed``), and never fails the job.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from functions.batch.s3io import events_client
from functions.contract.deployment import JOB_EVENT_DETAIL_TYPE, JOB_EVENT_SOURCE
from functions.telemetry import MetricUnit, logger, metrics

if TYPE_CHECKING:
    from functions.batch.types import JobSummary
    from functions.settings import Settings


def job_event(summary: JobSummary, summary_key: str) -> dict[str, Any]:
    """The event's detail: what an uploader needs to find and judge the result without reading the summary."""
    detail: dict[str, Any] = {
        "status": summary["status"], "model": summary["model"], "model_version": summary["model_version"],
        "input": summary["input"], "output": summary["output"],
        "summary": {"bucket": summary["input"]["bucket"], "key": summary_key},
        "counts": summary["counts"], "errors_by_code": summary["errors_by_code"], "error": summary["error"],
        "duration_s": summary["duration_s"],
    }
    if "run" in summary:
        detail["run"] = summary["run"]
    return detail


def announce(settings: Settings, summary: JobSummary, summary_key: str, *, events: Any = None) -> bool:
    """Put the job's event on ``MAAS_JOB_EVENT_BUS`` (nothing when unset); True when it was accepted."""
    if not settings.job_event_bus:
        return False
    entry = {"Source": JOB_EVENT_SOURCE, "DetailType": JOB_EVENT_DETAIL_TYPE, "EventBusName": settings.job_event_bus,
             "Detail": json.dumps(job_event(summary, summary_key))}
    try:
        response = (events or events_client()).put_events(Entries=[entry])
        failed = int(response.get("FailedEntryCount", 0))
    except Exception:
        logger.exception("job announcement failed", extra={"key": summary["input"]["key"]})
        failed = 1
    if failed:
        metrics.add_metric(name="JobAnnouncementsFailed", unit=MetricUnit.Count, value=1)
    return not failed
