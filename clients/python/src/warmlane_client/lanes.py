"""The raw path: publish MessagePack straight to the lanes over AMQP and wait for the
terminal reply on Redis, as the wire contract describes (README, "The wire contract").

:class:`AsyncClient` does the I/O on asyncio (``aio-pika``, ``redis.asyncio``);
:class:`Client` is the same client driven by an event loop of its own, for code that
is not async. See this package's README for what the raw path does *not* do (it skips
the producer's admission: no task hash until a worker takes the message, no routing on
lane health, no deadline for the reaper's backstop).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Coroutine, Dict, Optional, TypeVar

import aio_pika
import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import ChannelClosed, DeliveryError, PublishError

from .errors import QueueOverloaded, ReplyTimeout, ServiceUnavailable
from .types import GenerationRequest, Progress, ProgressCallback, Reply, Submitted, new_task_id

T = TypeVar("T")

CONTENT_TYPE = "application/msgpack"
DEGRADED_KEY = "degraded"
HEADER_ENQUEUED_MS = "x-warmlane-enqueued-ms"
HEADER_FALLBACK_CAUSE = "x-warmlane-fallback-cause"
#: How often the progress callback's poll reads the task hash.
PROGRESS_EVERY_S = 0.2


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _call(callback: ProgressCallback, progress: Progress) -> None:
    result = callback(progress)
    if inspect.isawaitable(result):
        await result


class AsyncClient:
    """Publishes generation requests to ``<prefix>.lanes`` (routing key = model) with
    publisher confirms and waits on ``<prefix>:reply:<task_id>``.

    Use as ``async with AsyncClient(amqp_url, redis_url) as client:``; it connects on
    first use and holds one AMQP connection (reconnecting) and one Redis pool.
    """

    def __init__(self, amqp_url: str, redis_url: str, prefix: str = "warmlane") -> None:
        self.amqp_url = amqp_url
        self.redis_url = redis_url
        self.prefix = prefix
        self._connection: Optional[AbstractRobustConnection] = None
        self._channel: Optional[AbstractChannel] = None
        self._redis: Optional["aioredis.Redis"] = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def reply_key(self, task_id: str) -> str:
        return f"{self.prefix}:reply:{task_id}"

    def task_key(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    async def connect(self) -> None:
        """Connects to RabbitMQ and Redis; checks that the fleet declared its topology."""
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return
            try:
                if self._connection is None:
                    self._connection = await aio_pika.connect_robust(self.amqp_url)
                self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                # Passive: the producer and workers own the topology (queue arguments
                # come from their settings); a missing exchange means no fleet ran yet.
                await self._channel.get_exchange(f"{self.prefix}.lanes", ensure=True)
            except ChannelClosed as e:
                self._channel = None
                raise ServiceUnavailable(
                    "service_unavailable",
                    "topology",
                    f"exchange {self.prefix}.lanes is not declared; start a warmlane producer or worker first ({e})",
                ) from e
            except (OSError, aio_pika.exceptions.AMQPConnectionError) as e:
                raise ServiceUnavailable("service_unavailable", "broker", f"cannot reach RabbitMQ: {e}") from e
            if self._redis is None:
                self._redis = aioredis.from_url(self.redis_url)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._channel = None

    async def _exchange(self, name: str) -> AbstractExchange:
        await self.connect()
        assert self._channel is not None
        return await self._channel.get_exchange(name, ensure=False)

    def _message(self, body: bytes, task_id: str, headers: Optional[Dict[str, Any]] = None) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            message_id=task_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
        )

    async def submit(self, request: GenerationRequest) -> Submitted:
        """Publishes one request and waits for the broker's confirm.

        To the model's lane first; a nack (lane full) or a return (no lane bound for
        the model) falls back to ``<prefix>.degraded`` with cause ``capacity``, as the
        producer does. A nack there raises :class:`QueueOverloaded` (``queue_full``).
        """
        task_id = request.task_id or new_task_id()
        body = request.to_msgpack(task_id)
        lanes = await self._exchange(f"{self.prefix}.lanes")
        try:
            await lanes.publish(self._message(body, task_id), routing_key=request.model, mandatory=True)
            return Submitted(task_id=task_id, lane=request.model)
        except DeliveryError:  # PublishError (returned) is a DeliveryError too.
            pass
        degraded = await self._exchange(f"{self.prefix}.degraded")
        headers = {HEADER_ENQUEUED_MS: _now_ms(), HEADER_FALLBACK_CAUSE: "capacity"}
        try:
            await degraded.publish(self._message(body, task_id, headers), routing_key=DEGRADED_KEY, mandatory=True)
        except PublishError as e:
            raise QueueOverloaded(
                "queue_overloaded", "unroutable", "no degraded queue is bound; retry later", task_id=task_id
            ) from e
        except DeliveryError as e:
            raise QueueOverloaded(
                "queue_overloaded", "queue_full", "the lane and the degraded queue are full", task_id=task_id
            ) from e
        return Submitted(task_id=task_id, lane=DEGRADED_KEY, fallback_cause="capacity")

    async def progress(self, task_id: str) -> Optional[Progress]:
        """The task hash's ``progress``, once a worker has started the task."""
        await self.connect()
        assert self._redis is not None
        return Progress.parse(await self._redis.hget(self.task_key(task_id), "progress"))

    async def wait(
        self, task_id: str, timeout: float = 300.0, on_progress: Optional[ProgressCallback] = None
    ) -> Reply:
        """BLPOPs the terminal reply; returns it when ``done``, raises its typed error
        otherwise, or :class:`ReplyTimeout` after ``timeout`` seconds.

        With ``on_progress``, the task hash is read every 0.2 s and the callback called
        on each new ``<step>/<steps>`` (a final ``steps/steps`` included when the
        worker recorded progress)."""
        await self.connect()
        assert self._redis is not None
        deadline = time.monotonic() + timeout
        last: Optional[Progress] = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplyTimeout(
                    "client_timeout", "reply", f"no reply within {timeout} s", task_id=task_id
                )
            block = min(left, PROGRESS_EVERY_S) if on_progress else left
            popped = await self._redis.blpop([self.reply_key(task_id)], timeout=max(block, 0.01))
            if on_progress is not None:
                now = await self.progress(task_id)
                if now is not None and now != last:
                    last = now
                    await _call(on_progress, now)
            if popped is not None:
                body = popped[1]
                reply = Reply.from_msgpack(body.encode() if isinstance(body, str) else body)
                error = reply.error()
                if error is not None:
                    raise error
                return reply

    async def generate(
        self, request: GenerationRequest, timeout: float = 300.0, on_progress: Optional[ProgressCallback] = None
    ) -> Reply:
        """:meth:`submit` then :meth:`wait`."""
        submitted = await self.submit(request)
        return await self.wait(submitted.task_id, timeout=timeout, on_progress=on_progress)


class Client:
    """The blocking variant of :class:`AsyncClient`: the same calls, each run to the end
    on an event loop the client owns. Not for use inside a running event loop (use
    :class:`AsyncClient` there); progress callbacks run on the calling thread."""

    def __init__(self, amqp_url: str, redis_url: str, prefix: str = "warmlane") -> None:
        self._loop = asyncio.new_event_loop()
        self._inner = AsyncClient(amqp_url, redis_url, prefix)

    @property
    def prefix(self) -> str:
        return self._inner.prefix

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def connect(self) -> None:
        self._run(self._inner.connect())

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self._inner.close())
            self._loop.close()

    def submit(self, request: GenerationRequest) -> Submitted:
        return self._run(self._inner.submit(request))

    def progress(self, task_id: str) -> Optional[Progress]:
        return self._run(self._inner.progress(task_id))

    def wait(self, task_id: str, timeout: float = 300.0, on_progress: Optional[ProgressCallback] = None) -> Reply:
        return self._run(self._inner.wait(task_id, timeout=timeout, on_progress=on_progress))

    def generate(
        self, request: GenerationRequest, timeout: float = 300.0, on_progress: Optional[ProgressCallback] = None
    ) -> Reply:
        return self._run(self._inner.generate(request, timeout=timeout, on_progress=on_progress))
