"""warmlane's Python client.

- :class:`Client` / :class:`AsyncClient` (:mod:`.lanes`): publish MessagePack straight
  to the lanes over AMQP with publisher confirms and BLPOP the reply from Redis.
- :class:`HttpClient` / :class:`AsyncHttpClient` (:mod:`.http`): the HTTP shim.
- :mod:`.types`: the wire types (pure); :mod:`.errors`: one error class per contract code.
"""

from .errors import (
    Cancelled,
    Conflict,
    Forbidden,
    GpuOom,
    InferenceFailed,
    InferenceTimeout,
    InvalidParameter,
    MalformedMessage,
    NotFound,
    QueueOverloaded,
    ReplyTimeout,
    ServiceUnavailable,
    Unauthorized,
    UnknownModel,
    WarmlaneError,
    error_for,
)
from .http import AsyncHttpClient, HttpClient
from .lanes import AsyncClient, Client
from .types import (
    Accepted,
    GenerationRequest,
    Progress,
    ProgressCallback,
    Reply,
    Submitted,
    TaskView,
    Timings,
    VideoResult,
)

__version__ = "0.1.0"

__all__ = [
    "Accepted",
    "AsyncClient",
    "AsyncHttpClient",
    "Cancelled",
    "Client",
    "Conflict",
    "Forbidden",
    "GenerationRequest",
    "GpuOom",
    "HttpClient",
    "InferenceFailed",
    "InferenceTimeout",
    "InvalidParameter",
    "MalformedMessage",
    "NotFound",
    "Progress",
    "ProgressCallback",
    "QueueOverloaded",
    "Reply",
    "ReplyTimeout",
    "ServiceUnavailable",
    "Submitted",
    "TaskView",
    "Timings",
    "Unauthorized",
    "UnknownModel",
    "VideoResult",
    "WarmlaneError",
    "error_for",
]
