"""OpenAI-compatible transcription server (``speechtl serve``), on FastAPI + uvicorn.

- ``POST /v1/audio/transcriptions`` (multipart): ``file``, ``model``, ``language``, ``prompt``,
  ``response_format`` (json, text, verbose_json, srt, vtt), ``temperature`` (0..1) and
  ``timestamp_granularities[]`` (segment, word; verbose_json only) -- answered as OpenAI answers.
- ``GET /v1/models`` lists the one served model; ``GET /health`` (no key needed) tells its state.
- Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``: 400 bad parameters (FastAPI's
  422 validation errors included) or undecodable audio, 401 missing or wrong key (``Authorization: Bearer``)
  when a key is set, 404 unknown route, 413 upload over ``max_upload_bytes`` or audio over
  ``max_duration_s``, 415 a file that is not audio by its extension or content type, 503 queue full.

Bodies follow OpenAI's: json is ``{"text", "usage"}``, text is the text and a newline, verbose_json names
the language in English ("spanish"). ``model`` is required, as in OpenAI's API, but any non-empty value
is accepted: one model is served and clients that hard-code a name ("whisper-1") keep working;
``/v1/models`` names the served id.

Concurrency: the event loop never runs a model. Audio is decoded on a worker thread, then the backend
runs on a pool of ``backend.max_concurrency`` threads (1 for a torch model, which is not thread-safe).
A request holds a slot from its admission (after parsing the form) to the end of its inference;
there are ``max_concurrency + queue_size`` slots and a request finding none gets 503 at once.
"""

import asyncio
import functools
import hmac
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from speechtl.runtimes import Runtime, load_runtime
from speechtl.runtimes.transcript import RequestError, Transcript
from speechtl.serve.responses import subtitles, usage, verbose_json
from speechtl.serve.upload import decode_upload

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
OPENAI_FILE_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
AUDIO_EXTENSIONS = frozenset({*OPENAI_FILE_FORMATS, "opus", "aac", "aif", "aiff", "amr", "au", "caf", "mka", "wma",
                              "3gp", "g722", "722", "ulaw", "alaw", "gsm", "sln", "sln16"})
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/ogg"})
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's limit
DEFAULT_MAX_DURATION_S = 600.0
DEFAULT_QUEUE_SIZE = 8
_FORM_SLACK_BYTES = 64 * 1024  # room for the other form fields and multipart framing


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def response(self) -> Any:
        from starlette.responses import JSONResponse

        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _fastapi() -> Any:
    try:
        import fastapi
        import python_multipart  # noqa: F401  (FastAPI needs it for form fields)
    except ImportError as exc:
        raise ImportError(f"speechtl serve needs {exc.name}: pip install 'speechtl[serve]'") from exc
    return fastapi


class _Slots:
    """Admission control and the inference threads (see the module docstring)."""

    def __init__(self, workers: int, queue_size: int) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="speechtl-serve")
        self.capacity = workers + queue_size
        self.admitted = self.running = 0
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            if self.admitted >= self.capacity:
                return False
            self.admitted += 1
            return True

    def release(self, _: Any = None) -> None:
        with self._lock:
            self.admitted -= 1

    def submit(self, fn: Any) -> Future:
        """Run ``fn`` on an inference thread; the slot is released when it ends (or is cancelled unstarted)."""
        def work() -> Any:
            with self._lock:
                self.running += 1
            try:
                return fn()
            finally:
                with self._lock:
                    self.running -= 1
        future = self.executor.submit(work)
        future.add_done_callback(self.release)
        return future


class _Gate:
    """ASGI middleware run before the body is read: the API key and the request size."""

    def __init__(self, app: Any, api_key: str | None, max_upload_bytes: int) -> None:
        self.app, self.api_key, self.max_upload_bytes = app, api_key, max_upload_bytes
        self.max_body_bytes = max_upload_bytes + _FORM_SLACK_BYTES

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        error = self._check(scope["path"], headers)
        if error is not None:
            seen = 0  # read what the client sends first, so it gets the answer, not a reset connection
            while seen <= 4 * self.max_body_bytes:
                message = await receive()
                seen += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            return await error.response()(scope, receive, send)
        if b"content-length" not in headers:  # streamed body: count as it comes
            receive = self._counting(receive)
        await self.app(scope, receive, send)

    def _check(self, path: str, headers: dict[bytes, bytes]) -> ApiError | None:
        if self.api_key and path.startswith("/v1/"):
            auth = headers.get(b"authorization", b"").decode("latin-1").strip()
            if not auth:
                return ApiError(401, "You didn't provide an API key. You need to provide your API key in an "
                                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            scheme, _, key = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                return ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        length = headers.get(b"content-length", b"0").decode("latin-1")
        if not length.isdigit():
            return ApiError(400, f"Invalid Content-Length header: {length!r}.")
        if int(length) > self.max_body_bytes:
            return _too_large(int(length), self.max_upload_bytes)
        return None

    def _counting(self, receive: Any) -> Any:
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                from starlette.exceptions import HTTPException

                raise HTTPException(413, _too_large(seen, self.max_upload_bytes).message)
            return message
        return counted


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"Maximum content size limit ({limit}) exceeded ({size} bytes read).", param="file",
                    code="request_too_large")


def _check_media(upload: Any) -> str:
    """415 unless the upload looks like audio; returns the file suffix to decode it with."""
    name = upload.filename or ""
    ext = Path(name).suffix.lower().lstrip(".")
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    audio_type = ctype.startswith(("audio/", "video/")) or ctype in _GENERIC_TYPES
    if (ext and ext not in AUDIO_EXTENSIONS) or not audio_type:
        raise ApiError(415, f"Invalid file format ({name!r}, {ctype or 'no content type'}). Supported formats: "
                       f"{sorted(AUDIO_EXTENSIONS)}", param="file", code="unsupported_media_type")
    return f".{ext}" if ext else ".bin"


def render(transcript: Transcript, fmt: str, granularities: set[str]) -> Any:
    """The response OpenAI gives for ``response_format=fmt``."""
    from starlette.responses import JSONResponse, PlainTextResponse

    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(subtitles(transcript, fmt))
    if fmt == "json":
        return JSONResponse({"text": transcript.text, "usage": usage(transcript)})
    return JSONResponse(verbose_json(transcript, granularities))


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _add_error_handlers(app: Any) -> None:
    """Every error leaves in OpenAI's shape: ours, starlette's HTTP errors and FastAPI's validation errors."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    app.add_exception_handler(ApiError, lambda _, exc: exc.response())
    app.add_exception_handler(HTTPException, lambda request, exc: ApiError(
        exc.status_code, exc.detail if exc.status_code != 404 else f"Invalid URL ({request.method} "
        f"{request.url.path})", code="request_too_large" if exc.status_code == 413 else None,
        kind="invalid_request_error" if exc.status_code < 500 else "server_error").response())

    def validation_error(_: Any, exc: Any) -> Any:
        err = (exc.errors() or [{}])[0]
        param = str(err.get("loc", ("body", "request"))[-1])
        if err.get("type") == "missing":
            return _bad(param, f"Missing required parameter: '{param}'.", "missing_required_parameter").response()
        return _bad(param, f"Invalid value for '{param}': {err.get('msg', 'invalid')}.").response()
    app.add_exception_handler(RequestValidationError, validation_error)


def _checked_form(backend: Runtime, model: str, response_format: str, temperature: float,
                  granularities: list[str] | None, prompt: str | None) -> set[str]:
    """The requested timestamp granularities, once every form field is valid for ``backend`` (else a 400)."""
    if not model.strip():
        raise _bad("model", "Missing required parameter: 'model'.", "missing_required_parameter")
    if response_format not in RESPONSE_FORMATS:
        raise _bad("response_format", f"Invalid value: '{response_format}'. Supported values are: "
                   + ", ".join(f"'{f}'" for f in RESPONSE_FORMATS) + ".")
    if not 0.0 <= temperature <= 1.0:
        raise _bad("temperature", f"Invalid value for 'temperature': {temperature} is not between 0 and 1.")
    grans = set(granularities or ())
    if grans - {"segment", "word"}:
        raise _bad("timestamp_granularities[]", f"Invalid value: {sorted(grans)}; use 'segment' and/or 'word'.")
    if grans and response_format != "verbose_json":
        raise _bad("timestamp_granularities[]", "timestamp_granularities requires response_format=verbose_json.")
    if "word" in grans and not backend.supports_words:
        raise _bad("timestamp_granularities[]", "Word timestamps are not available for this model.")
    if prompt and not backend.supports_prompt:
        raise _bad("prompt", "This model takes no prompt.")
    return grans


def create_app(backend: Runtime, *, api_key: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_duration_s: float = DEFAULT_MAX_DURATION_S, queue_size: int = DEFAULT_QUEUE_SIZE,
               model_id: str = "speechtl") -> Any:
    """The FastAPI app serving ``backend`` (anything with the :class:`~speechtl.runtimes.Runtime` API).

    ``api_key``: when set, ``/v1/*`` needs ``Authorization: Bearer <api_key>`` (``/health`` stays open).
    ``max_upload_bytes``: largest accepted file (the request body may exceed it by 64 KiB of form fields).
    ``max_duration_s``: longest accepted audio, measured after decoding. ``queue_size``: requests that
    may wait for the model beyond the ``backend.max_concurrency`` running ones. ``model_id``: the id
    ``/v1/models`` lists.
    """
    fastapi = _fastapi()
    from fastapi import File, Form, UploadFile

    if max_upload_bytes <= 0 or max_duration_s <= 0 or queue_size < 0:
        raise ValueError(f"need max_upload_bytes > 0 ({max_upload_bytes}), max_duration_s > 0 ({max_duration_s}) "
                         f"and queue_size >= 0 ({queue_size})")
    slots = _Slots(max(1, int(backend.max_concurrency)), queue_size)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        slots.executor.shutdown(wait=False, cancel_futures=True)

    app = fastapi.FastAPI(title="speechtl", lifespan=lifespan)
    app.add_middleware(_Gate, api_key=api_key or None, max_upload_bytes=max_upload_bytes)
    _add_error_handlers(app)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_id, "backend": backend.name, "running": slots.running,
                "waiting": slots.admitted - slots.running}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                            "owned_by": "speechtl"}]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        file: Annotated[UploadFile, File()], model: Annotated[str, Form()],
        language: Annotated[str | None, Form()] = None, prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json", temperature: Annotated[float, Form()] = 0.0,
        granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
    ) -> Any:
        grans = _checked_form(backend, model, response_format, temperature, granularities, prompt)
        suffix = _check_media(file)
        size = file.size if file.size is not None else len(await file.read())
        if size > max_upload_bytes:
            raise _too_large(size, max_upload_bytes)
        if not slots.admit():
            raise ApiError(503, "The server is overloaded: too many transcriptions queued. Retry later.",
                           kind="server_error", code="server_overloaded", headers={"Retry-After": "1"})
        submitted = False
        try:
            await file.seek(0)
            audio = await asyncio.to_thread(decode_upload, await file.read(), suffix, file.filename or "file",
                                            max_duration_s)
            lang = (language or "").strip().lower() or None
            call = functools.partial(backend.transcript, audio, language=lang, prompt=prompt or None,
                                     temperature=temperature, word_timestamps="word" in grans)
            future = slots.submit(call)
            submitted = True
            transcript = await asyncio.wrap_future(future)
        except RequestError as exc:
            raise ApiError(exc.status, str(exc), param=exc.param, code=exc.code) from exc
        except (ApiError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("transcription failed")
            raise ApiError(500, "The server had an error while processing your request.", kind="server_error") \
                from exc
        finally:
            if not submitted:
                slots.release()
        return render(transcript, response_format, grans)

    return app


def serve(model_dir: Path | str, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          compute_type: str = "int8", language: str | None = None, num_workers: int = 1,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_duration_s: float = DEFAULT_MAX_DURATION_S,
          queue_size: int = DEFAULT_QUEUE_SIZE, model_id: str | None = None, log_level: str = "info") -> None:
    """Load the model in ``model_dir`` (:func:`~speechtl.runtimes.load_runtime`) and serve it until stopped."""
    _fastapi()
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError("speechtl serve needs uvicorn: pip install 'speechtl[serve]'") from exc
    backend = load_runtime(model_dir, compute_type=compute_type, num_workers=num_workers, lang=language)
    if not hasattr(backend, "transcript"):
        raise ValueError(f"{model_dir}: {backend.name} has no serving runtime; serve a CTranslate2 or transformers "
                         "directory")
    if num_workers != 1 and backend.max_concurrency == 1:
        log.warning("num_workers=%d ignored: %s serves one request at a time", num_workers, backend.name)
    app = create_app(backend, api_key=api_key, max_upload_bytes=max_upload_bytes, max_duration_s=max_duration_s,
                     queue_size=queue_size, model_id=model_id or Path(model_dir).resolve().name)
    log.info("serving %s (%s) on http://%s:%d/v1", model_dir, backend.name, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
