"""The server's OpenAPI document (``/openapi.json``): every status each operation answers, in OpenAI's shapes.

FastAPI documents a 200 and a 422 it never sends here (validation errors leave as 400); :func:`install`
replaces each operation's responses with the ones the server really gives -- the gate's 400/401/408/413
included -- and declares the bearer key when one is required. Paths outside the document answer 404, and
an undocumented method on a documented path 405 with ``Allow``, both in OpenAI's error shape.
"""

from __future__ import annotations

from typing import Any

DESCRIPTION = ("OpenAI-compatible speech transcription. Errors come in OpenAI's shape; a path not listed here "
               "answers 404 and a method a path does not take 405 with an Allow header.")
ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"], "additionalProperties": False,
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}
_USAGE = {"type": "object", "required": ["type", "seconds"],
          "properties": {"type": {"const": "duration"}, "seconds": {"type": "integer", "minimum": 0}}}
_SEGMENT = {"type": "object", "required": ["id", "seek", "start", "end", "text", "tokens", "temperature",
                                           "avg_logprob", "compression_ratio", "no_speech_prob"],
            "properties": {"id": {"type": "integer"}, "seek": {"type": "integer"}, "start": {"type": "number"},
                           "end": {"type": "number"}, "text": {"type": "string"},
                           "tokens": {"type": "array", "items": {"type": "integer"}},
                           "temperature": {"type": "number"}, "avg_logprob": {"type": "number"},
                           "compression_ratio": {"type": "number"}, "no_speech_prob": {"type": "number"}}}
_WORD = {"type": "object", "required": ["word", "start", "end"],
         "properties": {"word": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"}}}
TRANSCRIPTION_SCHEMA = {"oneOf": [
    {"title": "json", "type": "object", "required": ["text", "usage"], "additionalProperties": False,
     "properties": {"text": {"type": "string"}, "usage": _USAGE}},
    {"title": "verbose_json", "type": "object", "required": ["task", "language", "duration", "text", "usage"],
     "additionalProperties": False,
     "properties": {"task": {"const": "transcribe"}, "language": {"type": "string"},
                    "duration": {"type": "number"}, "text": {"type": "string"},
                    "segments": {"type": "array", "items": _SEGMENT}, "words": {"type": "array", "items": _WORD},
                    "usage": _USAGE}},
]}
_COUNT = {"type": "integer", "minimum": 0}
_HEALTH = {"type": "object", "required": ["status", "model", "backend", "running", "waiting", "free_slots"],
           "properties": {"status": {"const": "ok"}, "model": {"type": "string"}, "backend": {"type": "string"},
                          "running": _COUNT, "waiting": _COUNT, "free_slots": _COUNT,
                          "hotwords": {"type": ["string", "null"]}}}
_MODELS = {"type": "object", "required": ["object", "data"],
           "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
               "type": "object", "required": ["id", "object", "created", "owned_by"],
               "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                              "owned_by": {"type": "string"}}}}}}

_ERRORS = {  # status -> when the server answers it
    400: "Bad parameters, undecodable audio or a malformed Content-Length header.",
    401: "Missing or wrong API key (Authorization: Bearer), when the server has one.",
    404: "The form's model is not the one this server serves (see /v1/models).",
    408: "The request body stalled or did not arrive in time; the connection is closed.",
    413: "Request body, file or audio over a limit (upload size, duration, channels, sample rate).",
    415: "The file is not audio by its extension or content type.",
    500: "The model failed on the request.",
    503: "Every slot is taken (the queue is full); retry after Retry-After seconds.",
}
_GATE = (400, 413)  # what the request gate can answer on any route (from Content-Length)
OPERATIONS: dict[tuple[str, str], tuple[dict[str, Any], tuple[int, ...]]] = {  # (path, method) -> 200, errors
    ("/health", "get"): ({"application/json": {"schema": _HEALTH}}, _GATE),
    ("/v1/models", "get"): ({"application/json": {"schema": _MODELS}}, (*_GATE, 401)),
    ("/v1/audio/transcriptions", "post"): (
        {"application/json": {"schema": {"$ref": "#/components/schemas/Transcription"}},
         "text/plain": {"schema": {"type": "string"}}},
        (*_GATE, 401, 404, 408, 415, 500, 503)),
}
_HEADERS = {503: {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}}


def _responses(ok: dict[str, Any], errors: tuple[int, ...]) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "Success.", "content": ok}}
    for status in sorted(errors):
        responses[str(status)] = {"description": _ERRORS[status],
                                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        if status in _HEADERS:
            responses[str(status)]["headers"] = _HEADERS[status]
    return responses


def document(schema: dict[str, Any], *, bearer: bool) -> dict[str, Any]:
    """FastAPI's ``schema`` with the server's true responses (and the bearer key on ``/v1/*`` when ``bearer``)."""
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if (path, method) not in OPERATIONS:
                raise KeyError(f"{method.upper()} {path}: no responses documented in speechtl.serve.openapi")
            operation["responses"] = _responses(*OPERATIONS[path, method])
            if bearer and path.startswith("/v1/"):
                operation["security"] = [{"bearer": []}]
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(Error=ERROR_SCHEMA, Transcription=TRANSCRIPTION_SCHEMA)
    if bearer:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return schema


def install(app: Any, *, bearer: bool) -> None:
    """Serve :func:`document`'s schema at ``app``'s ``/openapi.json``."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(get_openapi(title=app.title, version=app.version,
                                                      description=app.description, routes=app.routes),
                                          bearer=bearer)
        return app.openapi_schema
    app.openapi = openapi
