"""The HTTP shim's client (README, "HTTP shim"): ``POST /generate``, ``GET /tasks/{id}``
(long-poll with ``?wait=N``), ``GET /tasks/{id}/result``, ``GET /tasks`` (recent tasks)
and ``DELETE /tasks/{id}`` (cancel).

:class:`HttpClient` blocks, :class:`AsyncHttpClient` is its asyncio twin; both on
``httpx``. Error envelopes ``{"error": {"code", "reason", "message"}}`` become the
typed errors of :mod:`warmlane_client.errors`, with ``Retry-After`` on every 503.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Dict, List, Optional

import httpx

from .errors import ReplyTimeout, error_for, parse_retry_after
from .types import Accepted, GenerationRequest, Progress, ProgressCallback, TaskView

#: Longest single long-poll the client asks for; the shim clamps to its own maximum.
LONG_POLL_S = 20
#: How often the task is re-read while a progress callback waits on it.
PROGRESS_EVERY_S = 0.2


def raise_for_response(response: httpx.Response) -> None:
    """Raises the typed error of a non-2xx answer (pure: reads status, headers, body)."""
    if response.is_success:
        return
    try:
        detail = response.json().get("error") or {}
    except ValueError:
        detail = {}
    raise error_for(
        detail.get("code") or f"http_{response.status_code}",
        detail.get("reason"),
        detail.get("message") or response.text[:200],
        status=response.status_code,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _finished(view: TaskView) -> TaskView:
    error = view.error()
    if error is not None:
        raise error
    return view


def _list_params(status: Optional[str], model: Optional[str], limit: Optional[int]) -> Dict[str, Any]:
    params = {"status": status, "model": model, "limit": limit}
    return {k: v for k, v in params.items() if v is not None}


def _task_list(response: httpx.Response) -> List[TaskView]:
    raise_for_response(response)
    return [TaskView.from_json(t) for t in response.json()["tasks"]]


def _headers(api_key: Optional[str]) -> Dict[str, str]:
    return {"x-api-key": api_key} if api_key else {}


class HttpClient:
    """Blocking client of the HTTP shim at ``base_url`` (e.g. ``http://127.0.0.1:8080``)."""

    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout: float = 30.0, **httpx_args: Any) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout + LONG_POLL_S, **httpx_args
        )

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, request: GenerationRequest) -> Accepted:
        """Validates and queues one request (202); raises the typed 4xx/5xx errors."""
        response = self._http.post("/generate", json=request.to_json())
        raise_for_response(response)
        return Accepted.from_json(response.json())

    def task(self, task_id: str, wait: int = 0) -> TaskView:
        """The task's view; with ``wait`` > 0 the shim holds the answer until terminal or ``wait`` s."""
        response = self._http.get(f"/tasks/{task_id}", params={"wait": wait} if wait else None)
        raise_for_response(response)
        return TaskView.from_json(response.json())

    def wait(self, task_id: str, timeout: float = 300.0, on_progress: Optional[ProgressCallback] = None) -> TaskView:
        """Follows the task until terminal: long-polls, or polls every 0.2 s calling
        ``on_progress`` on each new progress. Returns a done view; raises a failed
        task's typed error, or :class:`ReplyTimeout`."""
        deadline = time.monotonic() + timeout
        last: Optional[Progress] = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplyTimeout("client_timeout", "task", f"not terminal within {timeout} s", task_id=task_id)
            view = self.task(task_id, wait=0 if on_progress else max(1, min(int(left), LONG_POLL_S)))
            if on_progress is not None and view.progress is not None and view.progress != last:
                last = view.progress
                result = on_progress(view.progress)
                if inspect.isawaitable(result):
                    raise TypeError("HttpClient takes a plain progress callback; use AsyncHttpClient for coroutines")
            if view.terminal:
                return _finished(view)
            if on_progress is not None:
                time.sleep(PROGRESS_EVERY_S)

    def generate(
        self, request: GenerationRequest, timeout: float = 300.0, on_progress: Optional[ProgressCallback] = None
    ) -> TaskView:
        """:meth:`submit` then :meth:`wait`."""
        return self.wait(self.submit(request).task_id, timeout=timeout, on_progress=on_progress)

    def result(self, task_id: str) -> bytes:
        """The finished video's bytes (``video/mp4``)."""
        response = self._http.get(f"/tasks/{task_id}/result")
        raise_for_response(response)
        return response.content

    def cancel(self, task_id: str) -> TaskView:
        """Cancels a task: a pending one comes back ``failed``/``cancelled`` and never
        runs; a running one comes back with ``cancel_requested`` and stops at its next
        step. Raises :class:`Conflict` for a finished task, :class:`NotFound` for an unknown one."""
        response = self._http.delete(f"/tasks/{task_id}")
        raise_for_response(response)
        return TaskView.from_json(response.json())

    def tasks(self, status: Optional[str] = None, model: Optional[str] = None, limit: Optional[int] = None) -> List[TaskView]:
        """Recent tasks, newest first (``status`` may be ``cancelled``; ``limit`` 1-200)."""
        return _task_list(self._http.get("/tasks", params=_list_params(status, model, limit)))


class AsyncHttpClient:
    """The asyncio twin of :class:`HttpClient`; the same calls, awaited."""

    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout: float = 30.0, **httpx_args: Any) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout + LONG_POLL_S, **httpx_args
        )

    async def __aenter__(self) -> "AsyncHttpClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def submit(self, request: GenerationRequest) -> Accepted:
        response = await self._http.post("/generate", json=request.to_json())
        raise_for_response(response)
        return Accepted.from_json(response.json())

    async def task(self, task_id: str, wait: int = 0) -> TaskView:
        response = await self._http.get(f"/tasks/{task_id}", params={"wait": wait} if wait else None)
        raise_for_response(response)
        return TaskView.from_json(response.json())

    async def wait(
        self, task_id: str, timeout: float = 300.0, on_progress: Optional[ProgressCallback] = None
    ) -> TaskView:
        deadline = time.monotonic() + timeout
        last: Optional[Progress] = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplyTimeout("client_timeout", "task", f"not terminal within {timeout} s", task_id=task_id)
            view = await self.task(task_id, wait=0 if on_progress else max(1, min(int(left), LONG_POLL_S)))
            if on_progress is not None and view.progress is not None and view.progress != last:
                last = view.progress
                result = on_progress(view.progress)
                if inspect.isawaitable(result):
                    await result
            if view.terminal:
                return _finished(view)
            if on_progress is not None:
                await asyncio.sleep(PROGRESS_EVERY_S)

    async def generate(
        self, request: GenerationRequest, timeout: float = 300.0, on_progress: Optional[ProgressCallback] = None
    ) -> TaskView:
        accepted = await self.submit(request)
        return await self.wait(accepted.task_id, timeout=timeout, on_progress=on_progress)

    async def result(self, task_id: str) -> bytes:
        response = await self._http.get(f"/tasks/{task_id}/result")
        raise_for_response(response)
        return response.content

    async def cancel(self, task_id: str) -> TaskView:
        response = await self._http.delete(f"/tasks/{task_id}")
        raise_for_response(response)
        return TaskView.from_json(response.json())

    async def tasks(
        self, status: Optional[str] = None, model: Optional[str] = None, limit: Optional[int] = None
    ) -> List[TaskView]:
        return _task_list(await self._http.get("/tasks", params=_list_params(status, model, limit)))


__all__ = ["AsyncHttpClient", "HttpClient", "raise_for_response"]
