"""OpenAI-compatible transcription server (``speechtl serve``), on FastAPI + uvicorn.

- ``POST /v1/audio/transcriptions`` (multipart): ``file``, ``model``, ``language``, ``prompt``,
  ``response_format`` (json, text, verbose_json, srt, vtt), ``temperature`` (0..1) and
  ``timestamp_granularities[]`` (segment, word; verbose_json only) -- answered as OpenAI answers.
- ``GET /v1/models`` lists the one served model; ``GET /health`` (no key needed) tells its state.
- Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``: 400 bad parameters (FastAPI's
  422 validation errors included) or undecodable audio, 401 missing or wrong key (``Authorization: Bearer``)
  when a key is set, 404 unknown route, 405 (with ``Allow``) a method the route does not take, 408 a request
  body that stalls, 413 upload over ``max_upload_bytes`` or audio over ``max_duration_s`` (or over 8 channels
  or 192 kHz), 415 a file that is not audio by its extension or content type, 500 a model failure, 503 queue
  full. ``/openapi.json`` documents each (:mod:`speechtl.serve.openapi`).

Bodies follow OpenAI's: json is ``{"text", "usage"}``, text is the text and a newline, verbose_json names
the language in English ("spanish"). ``model`` is required, as in OpenAI's API, but any non-empty value
is accepted: one model is served and clients that hard-code a name ("whisper-1") keep working;
``/v1/models`` names the served id.

Limits, cheapest first: the request gate (:mod:`speechtl.serve.gate`) refuses from the headers (key,
Content-Length) before reading the body and cuts a body that stalls for ``body_timeout_s`` or is not
complete within ``upload_timeout_s``; the form's fields are checked; the upload's audio header is read
and an upload over a limit refused before decoding, which streams to 16 kHz mono
(:mod:`speechtl.serve.upload`); uvicorn connections that do not complete their request headers within
``header_timeout_s`` are closed (:mod:`speechtl.serve.connections`).

Concurrency (:mod:`speechtl.serve.slots`): the event loop never decodes audio or runs a model. A request
takes a slot once its form is parsed -- there are ``max_concurrency + queue_size`` slots, and a request
finding none gets 503 at once -- and its job, decoding then inference, runs on a pool of
``backend.max_concurrency`` threads (1 for a torch model, which is not thread-safe). A request whose client
disconnects is abandoned: its slot is free again at once, its job dropped from the queue or told to stop.
"""

import asyncio
import functools
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from speechtl.runtimes import Runtime, load_runtime
from speechtl.runtimes.transcript import RequestError, Transcript
from speechtl.serve import openapi
from speechtl.serve.connections import header_timeout_protocol
from speechtl.serve.errors import ApiError, add_error_handlers, bad_parameter, too_large
from speechtl.serve.gate import RequestGate
from speechtl.serve.hotwords import served_hotwords
from speechtl.serve.responses import subtitles, usage, verbose_json
from speechtl.serve.slots import Job, Slots
from speechtl.serve.upload import Cancelled, decode_upload

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
OPENAI_FILE_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
AUDIO_EXTENSIONS = frozenset({*OPENAI_FILE_FORMATS, "opus", "aac", "aif", "aiff", "amr", "au", "caf", "mka", "wma",
                              "3gp", "g722", "722", "ulaw", "alaw", "gsm", "sln", "sln16"})
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/ogg"})
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's limit
DEFAULT_MAX_DURATION_S = 600.0
DEFAULT_QUEUE_SIZE = 8
DEFAULT_BODY_TIMEOUT_S = 30.0  # longest pause in a request body
DEFAULT_UPLOAD_TIMEOUT_S = 600.0  # whole request body, from its headers: 25 MiB at 0.35 Mbit/s
DEFAULT_HEADER_TIMEOUT_S = 10.0  # request headers, from the connection (or the previous response)
_CLIENT_GONE = 499  # nginx's "client closed request": never reaches anyone, the client is gone


def _fastapi() -> Any:
    try:
        import fastapi
        import python_multipart  # noqa: F401  (FastAPI needs it for form fields)
    except ImportError as exc:
        raise ImportError(f"speechtl serve needs {exc.name}: pip install 'speechtl[serve]'") from exc
    return fastapi


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


def _checked_form(backend: Runtime, model: str, model_id: str, response_format: str, temperature: float,
                  granularities: list[str] | None, prompt: str | None) -> set[str]:
    """The requested timestamp granularities, once every form field is valid for ``backend`` (else a 400; a
    model other than ``model_id``: OpenAI's 404)."""
    if not model.strip():
        raise bad_parameter("model", "Missing required parameter: 'model'.", "missing_required_parameter")
    if model.strip() != model_id:
        raise ApiError(404, f"The model '{model.strip()}' does not exist; this server serves '{model_id}'.",
                       param="model", code="model_not_found")
    if response_format not in RESPONSE_FORMATS:
        raise bad_parameter("response_format", f"Invalid value: '{response_format}'. Supported values are: "
                            + ", ".join(f"'{f}'" for f in RESPONSE_FORMATS) + ".")
    if not 0.0 <= temperature <= 1.0:
        raise bad_parameter("temperature", f"Invalid value for 'temperature': {temperature} is not between 0 and 1.")
    grans = set(granularities or ())
    if grans - {"segment", "word"}:
        raise bad_parameter("timestamp_granularities[]",
                            f"Invalid value: {sorted(grans)}; use 'segment' and/or 'word'.")
    if grans and response_format != "verbose_json":
        raise bad_parameter("timestamp_granularities[]",
                            "timestamp_granularities requires response_format=verbose_json.")
    if "word" in grans and not backend.supports_words:
        raise bad_parameter("timestamp_granularities[]", "Word timestamps are not available for this model.")
    if prompt and not backend.supports_prompt:
        raise bad_parameter("prompt", "This model takes no prompt.")
    return grans


def _upload_size(upload: Any) -> int:
    """The uploaded file's size in bytes (starlette records it while parsing; else from the spooled file)."""
    if upload.size is not None:
        return int(upload.size)
    upload.file.seek(0, os.SEEK_END)
    return upload.file.tell()


def _job(backend: Runtime, source: BinaryIO, suffix: str, name: str, max_duration_s: float,
         cancelled: threading.Event, options: dict[str, Any]) -> Transcript:
    """What a worker thread does for one request: decode the upload, then run the model."""
    audio = decode_upload(source, suffix, name, max_duration_s, cancelled)
    if cancelled.is_set():
        raise Cancelled
    return backend.transcript(audio, **options)


async def _disconnected(receive: Any) -> None:
    """Return once the client has disconnected (the request body is read by then: only the end can come)."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # an ASGI server that repeats the body's end: look again shortly


async def _outcome(receive: Any, slots: Slots, job: Job) -> Transcript:
    """``job``'s transcript, or an abandoned job when the client disconnects first."""
    result = asyncio.wrap_future(job.future)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is stopping
        slots.abandon(job)
        result.cancel()
        raise
    finally:
        gone.cancel()
    if not result.done():
        slots.abandon(job)
        result.cancel()  # a result or error that comes later is dropped, not logged as never retrieved
        raise ApiError(_CLIENT_GONE, "The client closed the connection before the transcription was done.",
                       code="client_closed_request")
    if result.cancelled():
        raise ApiError(503, "The server is shutting down.", kind="server_error", code="server_shutting_down")
    try:
        return result.result()
    except RequestError as exc:
        raise ApiError.from_request_error(exc) from exc
    except Exception as exc:
        log.exception("transcription failed")
        raise ApiError(500, "The server had an error while processing your request.", kind="server_error") \
            from exc


def create_app(backend: Runtime, *, api_key: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_duration_s: float = DEFAULT_MAX_DURATION_S, queue_size: int = DEFAULT_QUEUE_SIZE,
               model_id: str = "speechtl", body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
               upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S, hotwords: str | None = None) -> Any:
    """The FastAPI app serving ``backend`` (anything with the :class:`~speechtl.runtimes.Runtime` API).

    ``api_key``: when set, ``/v1/*`` needs ``Authorization: Bearer <api_key>`` (``/health`` stays open).
    ``max_upload_bytes``: largest accepted file (the request body may exceed it by 64 KiB of form fields).
    ``max_duration_s``: longest accepted audio, read from its header and measured while decoding.
    ``queue_size``: requests that may wait for the model beyond the ``backend.max_concurrency`` running
    ones. ``model_id``: the id ``/v1/models`` lists. ``body_timeout_s``: longest pause allowed while a
    request body arrives; ``upload_timeout_s``: longest a whole body may take from its headers (408 and
    the connection closed past either). ``hotwords``: terms passed with every request that does not turn
    them off (:mod:`speechtl.serve.hotwords`).
    """
    fastapi = _fastapi()
    if min(max_upload_bytes, max_duration_s, body_timeout_s, upload_timeout_s) <= 0 or queue_size < 0:
        raise ValueError(f"need max_upload_bytes ({max_upload_bytes}), max_duration_s ({max_duration_s}), "
                         f"body_timeout_s ({body_timeout_s}) and upload_timeout_s ({upload_timeout_s}) > 0 and "
                         f"queue_size >= 0 ({queue_size})")
    slots = Slots(max(1, int(backend.max_concurrency)), queue_size)
    if hotwords and not backend.supports_prompt:
        log.warning("hotwords ignored: %s takes no prompt", backend.name)
        hotwords = None

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        slots.start()
        yield
        slots.shutdown()

    app = fastapi.FastAPI(title="speechtl", lifespan=lifespan, description=openapi.DESCRIPTION)
    app.add_middleware(RequestGate, api_key=api_key or None, max_upload_bytes=max_upload_bytes,
                       body_timeout_s=body_timeout_s, upload_timeout_s=upload_timeout_s)
    add_error_handlers(app)
    openapi.install(app, bearer=bool(api_key))
    _add_info_routes(app, slots, backend, model_id, hotwords)
    _add_transcriptions(app, slots, backend, model_id, max_upload_bytes, max_duration_s, hotwords)
    return app


def _add_info_routes(app: Any, slots: Slots, backend: Runtime, model_id: str, hotwords: str | None) -> None:
    """``GET /health`` and ``GET /v1/models``."""
    created = int(time.time())

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_id, "backend": backend.name, "running": slots.running,
                "waiting": slots.waiting, "free_slots": slots.capacity - slots.admitted, "hotwords": hotwords}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                            "owned_by": "speechtl"}]}


def _add_transcriptions(app: Any, slots: Slots, backend: Runtime, model_id: str, max_upload_bytes: int,
                        max_duration_s: float, hotwords: str | None) -> None:
    """``POST /v1/audio/transcriptions``."""
    from fastapi import File, Form, Request, UploadFile

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        request: Request, file: Annotated[UploadFile, File()],
        model: Annotated[str, Form(json_schema_extra={"minLength": 1, "examples": [model_id]})],
        language: Annotated[str | None, Form()] = None, prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form(json_schema_extra={"enum": list(RESPONSE_FORMATS)})] = "json",
        temperature: Annotated[float, Form(json_schema_extra={"minimum": 0, "maximum": 1})] = 0.0,
        granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]", json_schema_extra={
            "anyOf": [{"type": "array", "items": {"enum": ["segment", "word"]}}, {"type": "null"}]})] = None,
        use_hotwords: Annotated[bool, Form(alias="hotwords", description="speechtl: false decodes without the "
                                           "server's term list")] = True,
    ) -> Any:
        grans = _checked_form(backend, model, model_id, response_format, temperature, granularities, prompt)
        suffix = _check_media(file)
        size = _upload_size(file)
        if size > max_upload_bytes:
            raise too_large(size, max_upload_bytes)
        job = slots.admit()
        if job is None:
            raise ApiError(503, "The server is overloaded: too many transcriptions queued. Retry later.",
                           kind="server_error", code="server_overloaded", headers={"Retry-After": "1"})
        options = {"language": (language or "").strip().lower() or None, "prompt": prompt or None,
                   "temperature": temperature, "word_timestamps": "word" in grans}
        if hotwords and use_hotwords:
            options["hotwords"] = hotwords
        try:
            slots.submit(job, functools.partial(_job, backend, file.file, suffix, file.filename or "file",
                                                max_duration_s, job.cancelled, options))
        except RuntimeError as exc:  # the pool is shut down
            slots.release(job)
            raise ApiError(503, "The server is shutting down.", kind="server_error", code="server_shutting_down") \
                from exc
        return render(await _outcome(request.receive, slots, job), response_format, grans)


def default_model_id(model_dir: Path | str) -> str:
    """The id a model is served under without ``--model-id``: the run's name for a run's export
    (``runs/<name>/export/<format>``) or checkpoint (``runs/<name>/checkpoints/<kind>``), else the folder's."""
    path = Path(model_dir).resolve()
    return path.parent.parent.name if path.parent.name in ("export", "checkpoints") else path.name


def serve(model_dir: Path | str, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          compute_type: str = "int8", language: str | None = None, num_workers: int = 1,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_duration_s: float = DEFAULT_MAX_DURATION_S,
          queue_size: int = DEFAULT_QUEUE_SIZE, model_id: str | None = None, log_level: str = "info",
          body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S, upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S,
          header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S, terms: Path | str | None = None,
          use_hotwords: bool = True) -> None:
    """Load the model in ``model_dir`` (:func:`~speechtl.runtimes.load_runtime`) and serve it until stopped.

    The timeouts: ``header_timeout_s`` for a connection's request headers, ``body_timeout_s`` for a pause in
    a request body, ``upload_timeout_s`` for a whole body (see :func:`create_app`). ``terms``: a term list
    file for the hotwords (default: the run's kept term prompt); ``use_hotwords=False``: none.
    """
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
                     queue_size=queue_size, model_id=model_id or default_model_id(model_dir),
                     body_timeout_s=body_timeout_s, upload_timeout_s=upload_timeout_s,
                     hotwords=served_hotwords(model_dir, terms) if use_hotwords else None)
    log.info("serving %s (%s) on http://%s:%d/v1", model_dir, backend.name, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, http=header_timeout_protocol(header_timeout_s))
