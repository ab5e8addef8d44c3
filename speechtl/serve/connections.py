"""The connection timeout uvicorn lacks: a connection must send each request's headers in time.

uvicorn closes a connection left idle after a response (``timeout_keep_alive``), but waits without end on
one that is opened and sends nothing, or sends part of its request headers and stops (slowloris). The
protocol :func:`header_timeout_protocol` builds closes such a connection ``header_timeout_s`` after it was
opened, or after its last response, unless a request's headers have come in the meantime (its body then
has the request gate's timeouts, :mod:`speechtl.serve.gate`).
"""

from __future__ import annotations

from typing import Any


def header_timeout_protocol(header_timeout_s: float) -> type:
    """uvicorn's HTTP/1.1 protocol class (``http=`` of ``uvicorn.run``) with the header timeout."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    if header_timeout_s <= 0:
        raise ValueError(f"header_timeout_s must be > 0, got {header_timeout_s}")

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        """Closes the connection when no request's headers arrive in time (see the module docstring)."""

        _header_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_due, self.cycle)

        def _headers_due(self, cycle: Any) -> None:
            """Close unless a request began since the timer was armed (or the one then open still runs)."""
            self._header_timer = None
            idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if idle and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
