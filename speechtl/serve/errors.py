"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, and the handlers that put
every error the app raises (ours, starlette's HTTP errors, FastAPI's validation errors) into that shape."""

from __future__ import annotations

from typing import Any

from speechtl.runtimes.transcript import RequestError

# the codes starlette's own HTTP errors get (404 and 405 come from routing, 408 and 413 from the request gate)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: "request_too_large"}


class ApiError(Exception):
    """An error answered in OpenAI's shape, with extra response ``headers`` (``Retry-After``, ``Allow``, ...)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = dict(headers or {})

    @classmethod
    def from_request_error(cls, exc: RequestError) -> ApiError:
        """What a runtime or the upload decoder refused, as the client sees it."""
        return cls(exc.status, str(exc), param=exc.param, code=exc.code)

    def response(self) -> Any:
        """The starlette response carrying this error."""
        from starlette.responses import JSONResponse

        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers or None)


def too_large(size: int, limit: int, headers: dict[str, str] | None = None) -> ApiError:
    """413 for a request body or file of ``size`` bytes over ``limit``."""
    return ApiError(413, f"Maximum content size limit ({limit}) exceeded ({size} bytes read).", param="file",
                    code="request_too_large", headers=headers)


def bad_parameter(param: str, message: str, code: str = "invalid_value") -> ApiError:
    """400 naming the form field at fault."""
    return ApiError(400, message, param=param, code=code)


def _http_error(request: Any, exc: Any) -> Any:
    """starlette's HTTPException (routing's 404/405, the gate's 408/413) in OpenAI's shape, headers kept:
    a 405 carries ``Allow`` (RFC 9110), a cut-off upload ``Connection: close``."""
    status = exc.status_code
    message = str(exc.detail)
    if status == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    kind = "invalid_request_error" if status < 500 else "server_error"
    return ApiError(status, message, code=_HTTP_CODES.get(status), kind=kind, headers=exc.headers).response()


def _validation_error(_: Any, exc: Any) -> Any:
    """FastAPI's 422 for a missing or mistyped form field, answered as OpenAI answers it: 400 naming the field."""
    err = (exc.errors() or [{}])[0]
    param = str(err.get("loc", ("body", "request"))[-1])
    if err.get("type") == "missing":
        return bad_parameter(param, f"Missing required parameter: '{param}'.", "missing_required_parameter").response()
    return bad_parameter(param, f"Invalid value for '{param}': {err.get('msg', 'invalid')}.").response()


def _unexpected(_: Any, exc: Exception) -> Any:
    """A bug: 500 in OpenAI's shape (starlette still logs the traceback)."""
    return ApiError(500, "The server had an error while processing your request.", kind="server_error").response()


def add_error_handlers(app: Any) -> None:
    """Every error leaves ``app`` in OpenAI's shape."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(ApiError, lambda _, exc: exc.response())
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
