"""Query and path parameters of every HTTP app, read one way.

An outside probe found HTTP 500s for odd parameters: ``?since=2**64`` (an
LMDB key of 9 bytes), an empty ``?lot=`` or a 600-character id (LMDB refuses
empty and over-long keys), ``/api/alerts/-1``, ``limit=abc`` read by bare
``int()``.  Every handler now reads its parameters through these helpers:

* integers: ASCII digits only (no sign, no spaces, no ``_``, no other
  scripts' digits -- all of which ``int()`` accepts), within 0..2^63-1 or a
  stated bound; a page size may instead be capped (``cap``);
* ids: matching ``[limits] id_pattern`` whole, like every id of a frame
  (``protocol.Reader``): an id that does not match can never exist, so it is
  malformed (400), not unknown (404);
* enums: one of a fixed set.

A malformed value raises :class:`ParamError`; :func:`guard` (a handler
decorator) turns it into HTTP 400 with the one body shape every app uses::

    {"error": "since must be an integer in 0..9223372036854775807",
     "code": "bad_parameter", "field": "since"}

and any other exception into a typed 500 (``{"error": "internal error",
"code": "internal"}``, logged, no traceback in the response).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import msgspec
from starlette.requests import HTTPConnection
from starlette.responses import Response

from config.settings import LimitSettings

INT63_MAX = 2**63 - 1
BAD_PARAMETER = "bad_parameter"
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: int() also takes "+1", " 1", "1_0", "١"
_DEFAULT_ID = re.compile(LimitSettings().id_pattern)
_SHOWN = 64  # characters of an offending value echoed back, at most

log = logging.getLogger("pubex.http")
Handler = Callable[..., Awaitable[Response]]


class ParamError(ValueError):
    """A malformed query or path parameter: HTTP 400 ``{"error", "code", "field"}``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": BAD_PARAMETER, "field": self.field}


def error_body(message: str, code: str, field: str = "") -> dict[str, str]:
    """The typed error body of every HTTP app (``field`` only when one is named)."""
    return {"error": message, "code": code, **({"field": field} if field else {})}


def _json(data: Any, status: int) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


def bad_request(e: ParamError) -> Response:
    return _json(e.body(), 400)


def internal_error() -> Response:
    return _json(error_body("internal error", "internal"), 500)


def id_matcher(pattern: str | None = None) -> re.Pattern[str]:
    return _DEFAULT_ID if pattern is None else re.compile(pattern)


# ---------------------------------------------------------------- values


def to_int(field: str, raw: str, hi: int = INT63_MAX) -> int:
    if not _DIGITS.fullmatch(raw) or int(raw) > hi:
        raise ParamError(field, f"{field} must be an integer in 0..{hi}")
    return int(raw)


def to_id(field: str, raw: str, pattern: re.Pattern[str] | None = None) -> str:
    if not (pattern or _DEFAULT_ID).fullmatch(raw):
        raise ParamError(field, f"{field} must be an id matching [limits] id_pattern")
    return raw


def to_enum(field: str, raw: str, choices: Collection[str]) -> str:
    if raw not in choices:
        raise ParamError(field, f"{field} must be one of {', '.join(sorted(choices))}")
    return raw


# ------------------------------------------------------ query and path


def query_int(
    request: HTTPConnection,
    name: str,
    default: int,
    *,
    hi: int = INT63_MAX,
    cap: int | None = None,
    lo: int = 0,
) -> int:
    """An absent or empty parameter is ``default``; else digits within 0..``hi``,
    then capped at ``cap`` (a page size) and raised to ``lo``."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = to_int(name, raw, hi)
    if cap is not None:
        value = min(value, cap)
    return max(value, lo)


def query_id(
    request: HTTPConnection,
    name: str,
    *,
    pattern: re.Pattern[str] | None = None,
    empty: str | None = None,
) -> str | None:
    """Absent -> None.  Present -> must match the id pattern; an empty value is
    refused too unless ``empty`` says what it means (a cursor's start: "")."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if raw == "" and empty is not None:
        return empty
    return to_id(name, raw, pattern)


def query_enum(request: HTTPConnection, name: str, choices: Collection[str], default: str) -> str:
    raw = request.query_params.get(name)
    return default if raw is None or raw == "" else to_enum(name, raw, choices)


def path_int(request: HTTPConnection, name: str, *, hi: int = INT63_MAX) -> int:
    return to_int(name, str(request.path_params[name]), hi)


def path_id(request: HTTPConnection, name: str, *, pattern: re.Pattern[str] | None = None) -> str:
    return to_id(name, str(request.path_params[name]), pattern)


# ------------------------------------------------------------ handlers


def guard(fn: Handler) -> Handler:
    """A handler's :class:`ParamError` -> 400 with its typed body; anything else
    unexpected -> a typed 500, logged here (never a traceback to the client).
    Cancellation (a BaseException) passes through."""

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(*args, **kwargs)
        except ParamError as e:
            return bad_request(e)
        except Exception:
            log.exception("HTTP handler %s failed", getattr(fn, "__qualname__", fn))
            return internal_error()

    return guarded
