"""Wire types of the contract (README, "The wire contract"), as frozen dataclasses.

Everything here is pure: building a request body, decoding a reply, reading a task
view. The I/O lives in :mod:`warmlane_client.lanes` and :mod:`warmlane_client.http`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Union

import msgpack

from .errors import WarmlaneError, error_for

#: Called with each new :class:`Progress` while a task runs; may be a coroutine
#: function on the asyncio clients.
ProgressCallback = Callable[["Progress"], Union[None, Awaitable[None]]]


def new_task_id() -> str:
    """A fresh task id: a UUID v4 in simple form (32 hex characters, as the shim makes)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class GenerationRequest:
    """One text-to-video request. Parameters left ``None`` take the model's default from
    the fleet's settings; where a model fixes a value (anisora steps 8; phr00t steps 4
    and cfg 1.0) any other value is refused with ``invalid_parameter``."""

    model: str
    prompt: str
    negative_prompt: Optional[str] = None
    steps: Optional[int] = None
    cfg: Optional[float] = None
    seed: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    frames: Optional[int] = None
    #: 1-64 characters of ``[A-Za-z0-9_-]``, unique per request; generated when ``None``.
    task_id: Optional[str] = None

    def _fields(self) -> Dict[str, Any]:
        body: Dict[str, Any] = {"model": self.model, "prompt": self.prompt}
        for key in ("negative_prompt", "steps", "cfg", "seed", "width", "height", "frames"):
            value = getattr(self, key)
            if value is not None:
                body[key] = float(value) if key == "cfg" else value
        return body

    def to_wire(self, task_id: str, submitted_at_ms: Optional[int] = None) -> Dict[str, Any]:
        """The contract's request map (``v`` 1, string keys) for a raw lane publish."""
        body: Dict[str, Any] = {"v": 1, "task_id": task_id}
        body.update(self._fields())
        body["submitted_at_ms"] = submitted_at_ms if submitted_at_ms is not None else int(time.time() * 1000)
        return body

    def to_msgpack(self, task_id: str, submitted_at_ms: Optional[int] = None) -> bytes:
        """The request body as a MessagePack **map** (never an array)."""
        packed: bytes = msgpack.packb(self.to_wire(task_id, submitted_at_ms), use_bin_type=True)
        return packed

    def to_json(self) -> Dict[str, Any]:
        """The body of ``POST /generate`` (the shim fills in ``v``, and ``task_id`` when absent)."""
        body = self._fields()
        if self.task_id is not None:
            body["task_id"] = self.task_id
        return body


@dataclass(frozen=True)
class Progress:
    """Sampler progress: ``step`` of ``steps`` done (the task hash's ``progress``)."""

    step: int
    steps: int

    @staticmethod
    def parse(text: Optional[Union[str, bytes]]) -> Optional["Progress"]:
        """Parses ``"<step>/<steps>"``; ``None`` when absent or not in that shape."""
        if text is None:
            return None
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        step, sep, steps = text.partition("/")
        if not sep or not step.isdigit() or not steps.isdigit():
            return None
        return Progress(int(step), int(steps))


@dataclass(frozen=True)
class VideoResult:
    """The video of a done task: ``uri`` is ``file://<results dir>/<task_id>.mp4`` on the workers' disk,
    or ``s3://<bucket>/<prefix>/<task_id>.mp4`` with an S3 results store; any host fetches it through
    the shim's ``GET /tasks/{id}/result``."""

    uri: str
    frames: int
    width: int
    height: int
    bytes: int
    content_type: str = "image/gif"
    preview_uri: Optional[str] = None

    @staticmethod
    def from_map(m: Mapping[str, Any]) -> "VideoResult":
        return VideoResult(
            uri=str(m["uri"]),
            frames=int(m.get("frames", 0)),
            width=int(m.get("width", 0)),
            height=int(m.get("height", 0)),
            bytes=int(m.get("bytes", 0)),
            # A reply without it predates MP4 (README, "result adds two keys").
            content_type=str(m.get("content_type") or "image/gif"),
            preview_uri=m.get("preview_uri"),
        )


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent queued and in inference, where known."""

    queued_ms: Optional[int] = None
    inference_ms: Optional[int] = None


@dataclass(frozen=True)
class Reply:
    """The terminal reply read from ``<prefix>:reply:<task_id>``."""

    v: int
    task_id: str
    #: ``done``, ``failed`` or ``rejected``.
    status: str
    code: Optional[str]
    reason: Optional[str]
    message: str
    #: ``anisora``, ``phr00t``, ``degraded``, or ``None`` when refused before routing.
    lane: Optional[str]
    result: Optional[VideoResult]
    timings: Timings = field(default_factory=Timings)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @staticmethod
    def from_msgpack(body: bytes) -> "Reply":
        m = msgpack.unpackb(body, raw=False)
        if not isinstance(m, dict):
            raise ValueError("a reply must be a MessagePack map")
        timings = m.get("timings") or {}
        result = m.get("result")
        return Reply(
            v=int(m.get("v", 1)),
            task_id=str(m["task_id"]),
            status=str(m["status"]),
            code=m.get("code"),
            reason=m.get("reason"),
            message=str(m.get("message") or ""),
            lane=m.get("lane"),
            result=VideoResult.from_map(result) if isinstance(result, dict) else None,
            timings=Timings(timings.get("queued_ms"), timings.get("inference_ms")),
        )

    def error(self) -> Optional[WarmlaneError]:
        """The typed error of a failed or rejected reply; ``None`` when done."""
        if self.ok:
            return None
        return error_for(self.code, self.reason, self.message, task_id=self.task_id)


@dataclass(frozen=True)
class Submitted:
    """A request the broker confirmed: where it went."""

    task_id: str
    #: The exchange's routing: the model's lane, or ``degraded`` after a fallback.
    lane: str
    #: Why it went degraded (``capacity``), else ``None``.
    fallback_cause: Optional[str] = None


@dataclass(frozen=True)
class Accepted:
    """The shim's 202 answer to ``POST /generate``."""

    task_id: str
    lane: str
    status_url: str
    events_url: Optional[str] = None
    fallback_cause: Optional[str] = None
    submitted_at_ms: Optional[int] = None

    @staticmethod
    def from_json(j: Mapping[str, Any]) -> "Accepted":
        return Accepted(
            task_id=str(j["task_id"]),
            lane=str(j["lane"]),
            status_url=str(j["status_url"]),
            events_url=j.get("events_url"),
            fallback_cause=j.get("fallback_cause"),
            submitted_at_ms=j.get("submitted_at_ms"),
        )


@dataclass(frozen=True)
class TaskView:
    """A task as ``GET /tasks/{id}`` shows it (built from the Redis task hash)."""

    task_id: str
    #: ``pending``, ``processing``, ``done``, ``failed`` (a cancelled task is ``failed``
    #: with ``error_code`` ``cancelled``).
    status: str
    terminal: bool
    model: Optional[str] = None
    lane: Optional[str] = None
    fallback_cause: Optional[str] = None
    progress: Optional[Progress] = None
    attempts: Optional[int] = None
    error_code: Optional[str] = None
    error_reason: Optional[str] = None
    error_message: Optional[str] = None
    result_url: Optional[str] = None
    content_type: Optional[str] = None
    preview_url: Optional[str] = None
    timings: Mapping[str, Optional[int]] = field(default_factory=dict)
    #: While it runs: ``denoising`` (the steps ``progress`` counts), then ``decoding``.
    stage: Optional[str] = None
    #: A cancel asked its worker to stop; it ends ``failed``/``cancelled``.
    cancel_requested: bool = False

    @staticmethod
    def from_json(j: Mapping[str, Any]) -> "TaskView":
        progress = j.get("progress")
        error = j.get("error") or {}
        return TaskView(
            task_id=str(j["task_id"]),
            status=str(j["status"]),
            terminal=bool(j.get("terminal")),
            model=j.get("model"),
            lane=j.get("lane"),
            fallback_cause=j.get("fallback_cause"),
            progress=Progress(int(progress["step"]), int(progress["steps"])) if progress else None,
            attempts=j.get("attempts"),
            error_code=error.get("code"),
            error_reason=error.get("reason"),
            error_message=error.get("message"),
            result_url=j.get("result_url"),
            content_type=j.get("content_type"),
            preview_url=j.get("preview_url"),
            timings=dict(j.get("timings") or {}),
            stage=j.get("stage"),
            cancel_requested=bool(j.get("cancel_requested")),
        )

    def error(self) -> Optional[WarmlaneError]:
        """The typed error of a failed task; ``None`` otherwise."""
        if self.status != "failed":
            return None
        return error_for(self.error_code, self.error_reason, self.error_message or "", task_id=self.task_id)
