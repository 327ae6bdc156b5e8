"""Serve one event from a staged Lambda zip the way the Python runtime does, and say what it imported.

Run by tests/infra/test_lambda_deps.py with Lambda's Python as ``python3.13 -I -S -v lambda_probe.py
TASK_ROOT EVENT RESULT``: no site-packages, nothing from the environment, the task root first on
``sys.path`` (as ``/var/task`` is). It imports ``functions.handlers.http`` (the init phase), invokes the
handler with the event and writes ``{"status", "body", "modules"}`` as JSON to RESULT (stdout is the
function's log stream).
"""

from __future__ import annotations

import json
import sys


class Context:
    """The attributes Lambda's context object carries that the handler and Powertools read."""

    function_name = "maas-probe"
    function_version = "$LATEST"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:maas-probe"
    aws_request_id = "probe-request-1"
    log_group_name = "/aws/lambda/maas-probe"
    log_stream_name = "probe"

    def get_remaining_time_in_millis(self) -> int:
        return 20_000


def main() -> None:
    task_root, event_path, result_path = sys.argv[1:4]
    sys.path.insert(0, task_root)
    from functions.handlers.http import handler

    with open(event_path, encoding="utf-8") as handle:
        event = json.load(handle)
    response = handler(event, Context())
    result = {
        "status": response["statusCode"],
        "body": json.loads(response["body"]),
        "modules": sorted({name.partition(".")[0] for name in sys.modules}),
    }
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
