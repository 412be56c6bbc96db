"""The client against a real fleet (started by tests/tests/python_client.rs): real
ONNX workers on the anisora and phr00t lanes, the HTTP shim in front of them."""

from __future__ import annotations

import asyncio
from typing import List

import pytest

from warmlane_client import (
    AsyncClient,
    AsyncHttpClient,
    Cancelled,
    Client,
    Conflict,
    Forbidden,
    GenerationRequest,
    HttpClient,
    InvalidParameter,
    NotFound,
    Progress,
    UnknownModel,
)

from conftest import FleetEnv

TIMEOUT_S = 120.0


def anisora(**overrides: object) -> GenerationRequest:
    fields: dict = dict(model="anisora", prompt="lanterns over a harbour", steps=8, width=32, height=32, frames=2, seed=1)
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def phr00t(**overrides: object) -> GenerationRequest:
    fields: dict = dict(model="phr00t", prompt="a paper boat", steps=4, cfg=1.0, width=32, height=32, frames=4, seed=2)
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def is_mp4(data: bytes) -> bool:
    return len(data) > 8 and data[4:8] == b"ftyp"


# ---- AMQP + Redis (the raw path) -------------------------------------------------


def test_amqp_request_on_a_warm_lane_is_done_with_an_mp4(fleet: FleetEnv) -> None:
    with Client(fleet.amqp_url, fleet.redis_url, prefix=fleet.prefix) as client:
        submitted = client.submit(anisora())
        assert submitted.lane == "anisora" and submitted.fallback_cause is None
        reply = client.wait(submitted.task_id, timeout=TIMEOUT_S)
    assert reply.status == "done" and reply.lane == "anisora" and reply.code is None
    assert reply.result is not None
    assert reply.result.uri.startswith("file://") and reply.result.uri.endswith(".mp4")
    assert reply.result.content_type == "video/mp4"
    assert (reply.result.width, reply.result.height, reply.result.frames) == (32, 32, 2)
    with open(reply.result.uri[len("file://"):], "rb") as f:
        assert is_mp4(f.read(16))


def test_amqp_invalid_request_is_answered_invalid_parameter(fleet: FleetEnv) -> None:
    with Client(fleet.amqp_url, fleet.redis_url, prefix=fleet.prefix) as client:
        with pytest.raises(InvalidParameter) as caught:
            client.generate(anisora(steps=4), timeout=TIMEOUT_S)
    assert caught.value.field == "steps" and caught.value.task_id


def test_amqp_model_without_a_lane_falls_back_to_degraded(fleet: FleetEnv) -> None:
    # The broker returns it (no lane bound for the key); the client, like the producer,
    # publishes it to the degraded queue, whose worker validates it (none runs here).
    with Client(fleet.amqp_url, fleet.redis_url, prefix=fleet.prefix) as client:
        submitted = client.submit(GenerationRequest(model="no-such-model", prompt="x"))
    assert (submitted.lane, submitted.fallback_cause) == ("degraded", "capacity")


def test_amqp_progress_callback_sees_step_of_steps(fleet: FleetEnv) -> None:
    seen: List[Progress] = []
    with Client(fleet.amqp_url, fleet.redis_url, prefix=fleet.prefix) as client:
        # The fleet runs with `late_claim_ms: 0`: every task is claimed, so its progress recorded.
        reply = client.generate(anisora(frames=4), timeout=TIMEOUT_S, on_progress=seen.append)
    assert reply.ok
    assert seen, "the callback was called"
    assert all(p.steps == 8 and 0 <= p.step <= 8 for p in seen), seen
    assert seen[-1] == Progress(8, 8), seen


def test_async_amqp_client_works_the_same(fleet: FleetEnv) -> None:
    async def main() -> None:
        seen: List[Progress] = []

        async def on_progress(p: Progress) -> None:
            seen.append(p)

        async with AsyncClient(fleet.amqp_url, fleet.redis_url, prefix=fleet.prefix) as client:
            replies = await asyncio.gather(
                client.generate(phr00t(), timeout=TIMEOUT_S),
                client.generate(anisora(frames=4), timeout=TIMEOUT_S, on_progress=on_progress),
            )
            with pytest.raises(InvalidParameter):
                await client.generate(phr00t(cfg=2.0), timeout=TIMEOUT_S)
        assert [(r.status, r.lane) for r in replies] == [("done", "phr00t"), ("done", "anisora")]
        assert seen and seen[-1] == Progress(8, 8), seen

    asyncio.run(main())


# ---- HTTP shim -----------------------------------------------------------------


def test_http_request_is_done_and_downloads_an_mp4(fleet: FleetEnv) -> None:
    with HttpClient(fleet.http_url, api_key=fleet.api_key) as client:
        accepted = client.submit(phr00t())
        assert accepted.lane == "phr00t"
        view = client.wait(accepted.task_id, timeout=TIMEOUT_S)
        assert view.status == "done" and view.content_type == "video/mp4"
        assert is_mp4(client.result(view.task_id))


def test_http_invalid_request_raises_invalid_parameter_naming_the_field(fleet: FleetEnv) -> None:
    with HttpClient(fleet.http_url, api_key=fleet.api_key) as client:
        with pytest.raises(InvalidParameter) as caught:
            client.submit(anisora(steps=4))
    assert (caught.value.reason, caught.value.status) == ("steps", 422)


def test_http_unknown_model_raises_unknown_model(fleet: FleetEnv) -> None:
    with HttpClient(fleet.http_url, api_key=fleet.api_key) as client:
        with pytest.raises(UnknownModel) as caught:
            client.submit(GenerationRequest(model="no-such-model", prompt="x"))
    assert caught.value.status == 422


def test_http_wrong_key_is_forbidden(fleet: FleetEnv) -> None:
    with HttpClient(fleet.http_url, api_key="not-the-key") as client:
        with pytest.raises(Forbidden):
            client.submit(phr00t())


def test_http_progress_callback_sees_step_of_steps(fleet: FleetEnv) -> None:
    seen: List[Progress] = []
    with HttpClient(fleet.http_url, api_key=fleet.api_key) as client:
        view = client.generate(anisora(frames=4), timeout=TIMEOUT_S, on_progress=seen.append)
    assert view.status == "done"
    assert seen and all(p.steps == 8 for p in seen) and seen[-1] == Progress(8, 8), seen


def test_async_http_client_works_the_same(fleet: FleetEnv) -> None:
    async def main() -> None:
        async with AsyncHttpClient(fleet.http_url, api_key=fleet.api_key) as client:
            view = await client.generate(phr00t(), timeout=TIMEOUT_S)
            assert view.status == "done"
            assert is_mp4(await client.result(view.task_id))
            with pytest.raises(InvalidParameter) as caught:
                await client.submit(phr00t(width=33))
            assert caught.value.reason == "width"
            with pytest.raises(UnknownModel):
                await client.submit(GenerationRequest(model="no-such-model", prompt="x"))

    asyncio.run(main())


def test_http_cancel_a_pending_task_and_list_it(fleet: FleetEnv) -> None:
    # No wan-tiny worker runs here: its request waits in the degraded queue, pending.
    with HttpClient(fleet.http_url, api_key=fleet.api_key) as client:
        accepted = client.submit(GenerationRequest(model="wan-tiny", prompt="never runs"))
        view = client.cancel(accepted.task_id)
        assert (view.status, view.error_code, view.terminal) == ("failed", "cancelled", True)
        with pytest.raises(Cancelled):
            client.wait(accepted.task_id, timeout=TIMEOUT_S)
        with pytest.raises(Conflict) as late:
            client.cancel(accepted.task_id)
        assert late.value.status == 409
        with pytest.raises(NotFound):
            client.cancel("no-such-task")
        listed = client.tasks(status="cancelled", model="wan-tiny", limit=5)
        assert listed and listed[0].task_id == accepted.task_id, listed
        with pytest.raises(InvalidParameter) as bad:
            client.tasks(limit=0)
        assert bad.value.reason == "limit"


def test_async_http_cancel_and_list(fleet: FleetEnv) -> None:
    async def main() -> None:
        async with AsyncHttpClient(fleet.http_url, api_key=fleet.api_key) as client:
            accepted = await client.submit(GenerationRequest(model="wan-tiny", prompt="never runs either"))
            view = await client.cancel(accepted.task_id)
            assert view.error_code == "cancelled"
            recent = await client.tasks(limit=200)
            assert accepted.task_id in [t.task_id for t in recent]

    asyncio.run(main())
