"""The request gate: ASGI middleware that runs before the app reads a body.

- Refuses from the headers alone, reading no byte of the body: 401 for a missing or wrong API key on
  ``/v1/*``, 400 for a malformed ``Content-Length``, 413 for one over the limit. When the client has a
  body on the way the answer carries ``Connection: close`` and the server closes the connection after it
  (the client is not made to upload megabytes only to be refused).
- Cuts a body that stalls: 408 when no byte of it arrives for ``body_timeout_s``, or when the whole of it
  has not arrived within ``upload_timeout_s`` (a client trickling a byte now and then). A chunked body (no
  ``Content-Length``) is counted as it comes and cut with 413 past the limit.
- Any answer given before the body is all read (these, or the app's 400 for a malformed form) carries
  ``Connection: close``: the rest of the body is never read.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from speechtl.serve.errors import ApiError, too_large

FORM_SLACK_BYTES = 64 * 1024  # room for the other form fields and multipart framing
_CLOSE = {"Connection": "close"}


def _http_exception(status: int, message: str) -> Exception:
    """An error raised from ``receive``: FastAPI lets starlette's HTTPException through its body parsing,
    so the error handlers answer it (with ``Connection: close``, added by :func:`_closing_early`)."""
    from starlette.exceptions import HTTPException

    return HTTPException(status, message)


class _Body:
    """``receive`` with the gate's timeouts and, for a chunked body, its size limit."""

    def __init__(self, receive: Any, *, idle_s: float, total_s: float, limit_bytes: int | None,
                 max_upload_bytes: int) -> None:
        self.receive, self.idle_s, self.total_s = receive, idle_s, total_s
        self.limit_bytes, self.max_upload_bytes = limit_bytes, max_upload_bytes
        self.deadline = time.monotonic() + total_s
        self.complete, self.seen = False, 0

    async def __call__(self) -> Any:
        if self.complete:  # past the body: a wait for the client's disconnect, which takes as long as it takes
            return await self.receive()
        left_s = self.deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(self.receive(), timeout=max(0.0, min(self.idle_s, left_s)))
        except TimeoutError:
            reason = (f"no part of it came for {self.idle_s:g} s" if self.idle_s <= left_s
                      else f"it was not complete within {self.total_s:g} s")
            raise _http_exception(408, f"The request body did not arrive in time: {reason}.") from None
        if message["type"] != "http.request" or not message.get("more_body"):
            self.complete = True
        self.seen += len(message.get("body", b""))
        if self.limit_bytes is not None and self.seen > self.limit_bytes:
            raise _http_exception(413, too_large(self.seen, self.max_upload_bytes).message)
        return message


def _closing_early(send: Any, body: _Body) -> Any:
    """``send`` that adds ``Connection: close`` to an answer given before the body was all read (an error
    found on the way): the rest of the body is not read and the connection cannot carry another request."""
    async def send_closing(message: Any) -> None:
        if message["type"] == "http.response.start" and not body.complete:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)
    return send_closing


class RequestGate:
    """ASGI middleware: the API key and the request size from the headers, then the body's timeouts."""

    def __init__(self, app: Any, *, api_key: str | None, max_upload_bytes: int, body_timeout_s: float,
                 upload_timeout_s: float) -> None:
        self.app, self.api_key, self.max_upload_bytes = app, api_key, max_upload_bytes
        self.body_timeout_s, self.upload_timeout_s = body_timeout_s, upload_timeout_s
        self.max_body_bytes = max_upload_bytes + FORM_SLACK_BYTES

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        chunked = b"content-length" not in headers and b"transfer-encoding" in headers
        has_body = chunked or headers.get(b"content-length", b"0").strip() not in (b"0", b"")
        error = self._check(scope["path"], headers)
        if error is not None:
            if has_body:
                error.headers.update(_CLOSE)  # the body stays unread: the connection cannot carry another request
            return await error.response()(scope, receive, send)
        body = _Body(receive, idle_s=self.body_timeout_s, total_s=self.upload_timeout_s,
                     limit_bytes=self.max_body_bytes if chunked else None, max_upload_bytes=self.max_upload_bytes)
        body.complete = not has_body  # no body: nothing to time or to leave unread
        await self.app(scope, body, _closing_early(send, body))

    def _check(self, path: str, headers: dict[bytes, bytes]) -> ApiError | None:
        """The error the headers alone call for, or None."""
        if self.api_key and path.startswith("/v1/"):
            auth = headers.get(b"authorization", b"").decode("latin-1").strip()
            if not auth:
                return ApiError(401, "You didn't provide an API key. You need to provide your API key in an "
                                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            scheme, _, key = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                return ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        length = headers.get(b"content-length", b"0").decode("latin-1").strip()
        if not length.isdigit():
            return ApiError(400, f"Invalid Content-Length header: {length!r}.")
        if int(length) > self.max_body_bytes:
            return too_large(int(length), self.max_upload_bytes)
        return None
