"""Pure tests: request encoding, reply decoding, error mapping (no servers)."""

from __future__ import annotations

import httpx
import msgpack
import pytest

from warmlane_client import (
    GenerationRequest,
    InvalidParameter,
    Progress,
    QueueOverloaded,
    Reply,
    TaskView,
    UnknownModel,
    WarmlaneError,
    error_for,
)
from warmlane_client.errors import InferenceFailed, ServiceUnavailable, parse_retry_after
from warmlane_client.http import raise_for_response


def test_the_request_is_a_msgpack_map_with_the_contract_keys() -> None:
    req = GenerationRequest(model="phr00t", prompt="a paper boat", steps=4, cfg=1, width=32, height=32, frames=2)
    body = msgpack.unpackb(req.to_msgpack("abc-1", submitted_at_ms=123), raw=False)
    assert body == {
        "v": 1,
        "task_id": "abc-1",
        "model": "phr00t",
        "prompt": "a paper boat",
        "steps": 4,
        "cfg": 1.0,
        "width": 32,
        "height": 32,
        "frames": 2,
        "submitted_at_ms": 123,
    }
    assert isinstance(body["cfg"], float), "cfg is sent as a float"


def test_unset_parameters_are_left_to_the_settings() -> None:
    body = GenerationRequest(model="anisora", prompt="x", task_id="t").to_json()
    assert body == {"model": "anisora", "prompt": "x", "task_id": "t"}


def test_a_done_reply_decodes_with_its_result() -> None:
    wire = {
        "v": 1,
        "task_id": "t1",
        "status": "done",
        "code": None,
        "reason": None,
        "message": "done",
        "lane": "anisora",
        "result": {"uri": "file:///r/t1.mp4", "frames": 2, "width": 32, "height": 32, "bytes": 900,
                   "content_type": "video/mp4", "preview_uri": "file:///r/t1.gif", "later_key": 1},
        "timings": {"queued_ms": 3, "inference_ms": 40},
    }
    reply = Reply.from_msgpack(msgpack.packb(wire))
    assert reply.ok and reply.error() is None
    assert reply.result is not None and reply.result.content_type == "video/mp4"
    assert reply.timings.inference_ms == 40


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        ("invalid_parameter", "steps", InvalidParameter),
        ("unknown_model", "model", UnknownModel),
        ("queue_overloaded", "wait_timeout", QueueOverloaded),
        ("inference_failed", "poison", InferenceFailed),
        ("service_unavailable", "redis", ServiceUnavailable),
        ("something_new", None, WarmlaneError),
    ],
)
def test_codes_map_to_typed_errors(code: str, reason: str, cls: type) -> None:
    err = error_for(code, reason, "m", task_id="t")
    assert type(err) is cls and err.code == code and err.reason == reason and err.task_id == "t"


def test_a_rejected_reply_gives_its_typed_error() -> None:
    wire = {"v": 1, "task_id": "t", "status": "rejected", "code": "queue_overloaded", "reason": "queue_full",
            "message": "full", "lane": "degraded", "result": None, "timings": {}}
    err = Reply.from_msgpack(msgpack.packb(wire)).error()
    assert isinstance(err, QueueOverloaded) and err.reason == "queue_full" and err.retryable


def test_a_503_envelope_carries_retry_after() -> None:
    body = {"error": {"code": "queue_overloaded", "reason": "queue_full", "message": "full"}}
    response = httpx.Response(503, json=body, headers={"retry-after": "5"})
    with pytest.raises(QueueOverloaded) as caught:
        raise_for_response(response)
    assert (caught.value.reason, caught.value.retry_after, caught.value.status) == ("queue_full", 5.0, 503)
    assert parse_retry_after("soon") is None


def test_progress_and_task_views_parse() -> None:
    assert Progress.parse(b"3/8") == Progress(3, 8)
    assert Progress.parse("x/8") is None and Progress.parse(None) is None
    view = TaskView.from_json({"task_id": "t", "status": "failed", "terminal": True,
                               "error": {"code": "invalid_parameter", "reason": "width", "message": "m"}})
    err = view.error()
    assert isinstance(err, InvalidParameter) and err.field == "width"
