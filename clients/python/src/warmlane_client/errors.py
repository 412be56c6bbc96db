"""Typed errors: one class per contract error code (README, "Error codes"), plus the
HTTP shim's own codes and the client's own timeout.

Every error carries the contract's ``code``, ``reason`` and ``message``; callers pick
retry or give-up with :attr:`WarmlaneError.retryable` instead of matching strings.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class WarmlaneError(Exception):
    """Any refusal or failure reported by the fleet (or the client's own timeout)."""

    #: The contract code this class stands for (``None`` for the generic class).
    CODE: Optional[str] = None
    #: Whether the same request may succeed when sent again later.
    retryable: bool = False

    def __init__(
        self,
        code: Optional[str],
        reason: Optional[str] = None,
        message: str = "",
        *,
        task_id: Optional[str] = None,
        status: Optional[int] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{code}/{reason}: {message}" if reason else f"{code}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.task_id = task_id
        #: HTTP status, when the error came from the shim.
        self.status = status
        #: Seconds to wait before retrying (from ``Retry-After``), when the fleet said so.
        self.retry_after = retry_after


class InvalidParameter(WarmlaneError):
    """A field breaks a rule; ``reason`` names the field (also a reused ``task_id``)."""

    CODE = "invalid_parameter"

    @property
    def field(self) -> Optional[str]:
        """The offending field."""
        return self.reason


class UnknownModel(WarmlaneError):
    """The model is not in the fleet's ``inference_settings.json``."""

    CODE = "unknown_model"


class MalformedMessage(WarmlaneError):
    """The body was not a decodable request."""

    CODE = "malformed_message"


class QueueOverloaded(WarmlaneError):
    """Backpressure: ``reason`` is ``queue_full`` (publish refused) or ``wait_timeout``
    (nobody took the request in time). Retry later, after :attr:`retry_after` when set."""

    CODE = "queue_overloaded"
    retryable = True


class GpuOom(WarmlaneError):
    """Device memory exhausted after the worker's bounded retries."""

    CODE = "gpu_oom"
    retryable = True


class InferenceTimeout(WarmlaneError):
    """Inference ran past the model's limit."""

    CODE = "inference_timeout"


class InferenceFailed(WarmlaneError):
    """Any other inference error (``reason`` ``poison`` after too many deliveries)."""

    CODE = "inference_failed"


class Cancelled(WarmlaneError):
    """The caller cancelled the task (``DELETE /tasks/{id}``): a pending one never ran,
    a running one stopped at a denoising step."""

    CODE = "cancelled"


class Conflict(WarmlaneError):
    """The shim's 409: the task already had its terminal reply (a cancel came too late)."""

    CODE = "conflict"


class NotFound(WarmlaneError):
    """HTTP 404: no such task (unknown, or expired after 24 h) or result."""

    CODE = "not_found"


class Unauthorized(WarmlaneError):
    """HTTP 401: the ``x-api-key`` header is missing."""

    CODE = "unauthorized"


class Forbidden(WarmlaneError):
    """HTTP 403: the API key is wrong."""

    CODE = "forbidden"


class ServiceUnavailable(WarmlaneError):
    """RabbitMQ or Redis is unreachable (``reason`` ``broker``, ``redis``,
    ``unconfirmed``), or the fleet's topology is not declared (``topology``)."""

    CODE = "service_unavailable"
    retryable = True


class ReplyTimeout(WarmlaneError, TimeoutError):
    """No terminal answer arrived within the client's own timeout. The task may still
    finish; wait on it again with the same ``task_id``."""

    CODE = "client_timeout"
    retryable = True


_BY_CODE: Dict[str, Type[WarmlaneError]] = {
    cls.CODE: cls
    for cls in (
        InvalidParameter,
        UnknownModel,
        MalformedMessage,
        QueueOverloaded,
        GpuOom,
        InferenceTimeout,
        InferenceFailed,
        Cancelled,
        Conflict,
        NotFound,
        Unauthorized,
        Forbidden,
        ServiceUnavailable,
        ReplyTimeout,
    )
    if cls.CODE is not None
}


def error_for(
    code: Optional[str],
    reason: Optional[str] = None,
    message: str = "",
    *,
    task_id: Optional[str] = None,
    status: Optional[int] = None,
    retry_after: Optional[float] = None,
) -> WarmlaneError:
    """The typed error for a contract or shim code; unknown codes give :class:`WarmlaneError`."""
    cls = _BY_CODE.get(code or "", WarmlaneError)
    return cls(code, reason, message, task_id=task_id, status=status, retry_after=retry_after)


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` in seconds (the shim sends delta-seconds); ``None`` when absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
