"""Fixtures for the tests against a real fleet.

`cargo test -p warmlane-tests --test python_client` starts an in-process fleet (real
ONNX workers on the anisora and phr00t lanes, the HTTP shim with its reaper) and runs
these tests with:

- ``WARMLANE_CLIENT_AMQP_URL``, ``WARMLANE_CLIENT_REDIS_URL``: the servers;
- ``WARMLANE_CLIENT_PREFIX``: the fleet's name prefix;
- ``WARMLANE_CLIENT_HTTP_URL``, ``WARMLANE_CLIENT_API_KEY``: the shim and its key.

Run alone, without them, the fleet tests are skipped (the Rust test fails on a skip).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class FleetEnv:
    amqp_url: str
    redis_url: str
    prefix: str
    http_url: str
    api_key: str


@pytest.fixture(scope="session")
def fleet() -> FleetEnv:
    names = ["AMQP_URL", "REDIS_URL", "PREFIX", "HTTP_URL", "API_KEY"]
    values = {n: os.environ.get(f"WARMLANE_CLIENT_{n}") for n in names}
    missing = [f"WARMLANE_CLIENT_{n}" for n, v in values.items() if not v]
    if missing:
        pytest.skip(f"no fleet: {', '.join(missing)} unset (run `cargo test -p warmlane-tests --test python_client`)")
    return FleetEnv(
        amqp_url=values["AMQP_URL"] or "",
        redis_url=values["REDIS_URL"] or "",
        prefix=values["PREFIX"] or "",
        http_url=values["HTTP_URL"] or "",
        api_key=values["API_KEY"] or "",
    )
