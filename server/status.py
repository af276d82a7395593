"""The status a refused or failed request answers with, on every protocol front end: a status code and a
message bounded in length, whatever the client sent.

A message quotes what the client sent (model names, input and output names, parameter values) so the client
can see what was wrong; `shown` and `listed` elide a long quote in the middle, and `RequestError` caps the whole
message at MESSAGE_LIMIT characters. gRPC carries the message in a trailer: past its 8 KiB metadata limit the
client would see RESOURCE_EXHAUSTED about metadata instead of the real status.
"""

from __future__ import annotations

import logging

import grpc

from miscause.server.batcher import Closed, DeadlineExpired, QueueFull

log = logging.getLogger("miscause.server")
MESSAGE_LIMIT = 512  # characters of a status message
SHOWN = 64  # characters of one quoted client value
LISTED = 4  # client values a message lists before saying how many there were
ELISION = "..."


def elided(text: str, limit: int) -> str:
    """`text` with its middle replaced by an elision mark when it is longer than `limit` characters."""
    if len(text) <= limit:
        return text
    mark = f"{ELISION}({len(text):,} characters){ELISION}"
    keep = max(limit - len(mark), 2)
    return text[:keep - keep // 2] + mark + text[len(text) - keep // 2:]


def shown(value: object) -> str:
    """The repr of a client-supplied value, at most about SHOWN characters."""
    return elided(repr(value), SHOWN)


def listed(values: list | tuple) -> str:
    """Client-supplied values, each shown, the first LISTED of them and how many in all."""
    head = ", ".join(shown(value) for value in values[:LISTED])
    return f"[{head}]" if len(values) <= LISTED else f"[{head}, {ELISION}] ({len(values):,} in all)"


class RequestError(Exception):
    """A request the server refuses: the gRPC status code (front ends map it to their own) and a message saying
    why, capped at MESSAGE_LIMIT characters."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        message = elided(message, MESSAGE_LIMIT)
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failure(error: Exception) -> RequestError:
    """The status a failed inference answers with, by what failed it."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, QueueFull):
        return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    if isinstance(error, DeadlineExpired):
        return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(error))
    if isinstance(error, Closed):
        return RequestError(grpc.StatusCode.UNAVAILABLE, str(error))
    if isinstance(error, ValueError):
        return RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    log.error("inference failed: %s", error, exc_info=error)
    return RequestError(grpc.StatusCode.INTERNAL, f"inference failed: {type(error).__name__}: {error}")
