"""One Lambda context for handlers run outside Lambda: the GPU queue worker, `maas invoke`, local AWS runs, tests.

It is Powertools' :class:`LambdaContext` type with a real deadline, so every consumer of the context
(idempotency's in-progress expiry, the S3 job's time budget, Logger's ``inject_lambda_context``) sees
what Lambda would give it: ``get_remaining_time_in_millis`` counts down from the timeout.
"""

from __future__ import annotations

import time
import uuid

from aws_lambda_powertools.utilities.typing import LambdaContext

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"


class DeadlineContext(LambdaContext):
    """A :class:`LambdaContext` whose remaining time runs out ``timeout_s`` after it was made."""

    def __init__(
        self,
        timeout_s: float,
        *,
        function_name: str = "maas-local",
        memory_limit_in_mb: int = 2048,
        request_id: str | None = None,
        invoked_function_arn: str | None = None,
    ) -> None:
        self._deadline = time.monotonic() + timeout_s
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = invoked_function_arn or (
            f"arn:aws:lambda:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:function:{function_name}"
        )
        self._memory_limit_in_mb = memory_limit_in_mb
        self._aws_request_id = request_id or str(uuid.uuid4())
        self._log_group_name = f"/aws/lambda/{function_name}"
        self._log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]  # static in the stub, bound in Lambda
        """Milliseconds left before the deadline (0 once it has passed), as Lambda's context reports them."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))
