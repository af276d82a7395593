"""Which inference requests the server accepted, and how each accepted request ended once a drain began.

Every front end admits a request before decoding it (`with admission.admit():`) and so refuses new work the
moment a drain starts. The requests in flight at that moment are the drain's to account for: each ends
answered (any status the request earned), refused (UNAVAILABLE at once, as it could not finish inside the
drain), dropped (cut when the drain time ran out) or cancelled by its caller.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from miscause.server.batcher import Closed, Dropped

OUTCOMES = ("answered", "refused", "dropped", "cancelled")


class Admission:
    """Requests in flight, and once closed, the outcome of each that was in flight when it closed."""

    def __init__(self) -> None:
        self.accepting = True
        self.in_flight = 0
        self.admitted = 0  # since start
        self.outcomes: Counter | None = None  # from the close on
        self.idle = asyncio.Event()
        self.idle.set()

    @contextmanager
    def admit(self) -> Iterator[None]:
        """One request's lifetime in the server; raises Closed (UNAVAILABLE) once the server stopped accepting."""
        if not self.accepting:
            raise Closed("server is shutting down: send to another replica")
        self.in_flight += 1
        self.admitted += 1
        self.idle.clear()
        outcome = "answered"
        try:
            yield
        except Dropped:
            outcome = "dropped"
            raise
        except Closed:
            outcome = "refused"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.in_flight -= 1
            if self.outcomes is not None:
                self.outcomes[outcome] += 1
            if not self.in_flight:
                self.idle.set()

    def close(self) -> None:
        """Refuse new requests from now on; count how the ones in flight end."""
        if self.outcomes is None:
            self.outcomes = Counter({outcome: 0 for outcome in OUTCOMES})
        self.accepting = False

    async def settled(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every admitted request to end; True when they all did."""
        try:
            await asyncio.wait_for(self.idle.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        return True

    def report(self) -> dict[str, int]:
        """The accepted requests a drain accounted for and how they ended (all zero before a close)."""
        outcomes = self.outcomes or Counter()
        counts = {outcome: outcomes[outcome] for outcome in OUTCOMES}
        return {"accepted": sum(counts.values()) + self.in_flight, **counts, "unfinished": self.in_flight}
