"""When a request's answer must be complete: a deadline the HTTP layer sets per request and generation respects.

A generation runs token by token; each step takes a roughly constant time, measured as it goes. Before each step,
generation asks whether one more step (at the slowest pace seen so far, doubled) still ends before the deadline; when
it would not, it stops there with ``finish_reason = "length"``, its text and usage those of the tokens it made. So a
request whose prompts and ``max_tokens`` would run past API Gateway's integration timeout or the function's own
timeout is answered in time, never cut off by a 504 or a killed function (streaming or not).

The deadline travels in a context variable (a ``time.monotonic()`` value): worker threads started for the request
inherit it. Outside a request (batch jobs, tests) there is none and generation runs to its token limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("maas_deadline", default=None)


@contextmanager
def deadline_scope(at: float | None) -> Iterator[None]:
    """Run the work inside under a deadline (a ``time.monotonic()`` value; None: no deadline)."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> float | None:
    """The deadline of the current request, if it has one."""
    return _DEADLINE.get()


class StepClock:
    """Times decoding steps and tells whether another one still fits before a deadline.

    The first measurement is the prefill (the whole prompt at once): until a single-token step has been timed it
    stands for the next step's time, an overestimate. From then on the slowest single-token step counts.
    """

    SAFETY = 2.0  # a step may take this many times the slowest one seen (GC pauses, a noisy neighbour)

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.step_s: float | None = None  # the slowest single-token step so far
        self.prefill_s = 0.0
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.monotonic()

    def stop(self) -> None:
        if self._started is None:
            return
        elapsed, self._started = time.monotonic() - self._started, None
        if self.prefill_s == 0.0 and self.step_s is None:
            self.prefill_s = elapsed or 1e-9
        else:
            self.step_s = max(self.step_s or 0.0, elapsed)

    def expired(self) -> bool:
        """True once the deadline has passed (nothing should start)."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def room_for_step(self) -> bool:
        """Whether one more step, at the slowest pace seen so far, ends before the deadline."""
        if self.deadline is None:
            return True
        estimate = self.step_s if self.step_s is not None else self.prefill_s
        return time.monotonic() + self.SAFETY * estimate < self.deadline
