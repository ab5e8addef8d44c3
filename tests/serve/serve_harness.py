"""What the serve tests share: a deterministic fake backend, a real uvicorn server on 127.0.0.1 (in a
thread, or as a subprocess whose memory can be measured: ``python serve_harness.py PORT_FILE [options]``),
and HTTP helpers that speak plain sockets where a test needs to stall or drop a connection."""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from speechtl.runtimes.transcript import Segment, Transcript, Word
from speechtl.serve.app import create_app

KEY = "sk-test-key"
MODEL = "tiny-fake"  # the --model-id of the test servers (create_app's default is "speechtl")
TEXT = "hello world second part"
ERROR_KEYS = {"message", "type", "param", "code"}


def wav_bytes(seconds: float, rate: int = 16000, channels: int = 1, freq_hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class FakeBackend:
    """Deterministic: two segments splitting the clip in halves; optionally blocks until ``gate`` is set."""

    name = "fake"
    max_concurrency = 1
    supports_prompt = True
    supports_words = True

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate, self.started, self.calls = gate, threading.Event(), []

    def transcript(self, audio, *, language=None, prompt=None, temperature=0.0, word_timestamps=False, hotwords=None):
        self.calls.append({"num_samples": len(audio), "dtype": str(audio.dtype), "language": language,
                           "prompt": prompt, "temperature": temperature, "words": word_timestamps,
                           "hotwords": hotwords})
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(20)
        half = len(audio) / 16000 / 2
        segments = (Segment(0, 0, 0.0, half, " hello world", (11, 12), 0.0, -0.25, 1.1, 0.01),
                    Segment(1, int(half * 100), half, 2 * half, " second part", (13, 14), 0.2, -0.5, 1.2, 0.02))
        words = (Word(" hello", 0.0, 0.2), Word(" world", 0.2, half)) if word_timestamps else None
        return Transcript(TEXT, language or "es", 2 * half, segments, words)


@contextmanager
def running(app, **config):
    """uvicorn on a free port in a background thread (``config``: more ``uvicorn.Config`` options); stopped
    on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def client(port: int, key: str = KEY):
    import openai

    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=60)


def multipart(fields: dict | None = None, files: dict | None = None) -> tuple[bytes, str]:
    """(body, content type) of a multipart form; files: name -> (filename, bytes, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in (fields or {}).items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{fn}"\r\n'
              f"Content-Type: {ctype}\r\n\r\n".encode() + body + b"\r\n"
              for k, (fn, body, ctype) in (files or {}).items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def call(port: int, path: str, *, fields: dict | None = None, files: dict | None = None, key: str | None = KEY,
         method: str | None = None):
    """(status, body, headers) of a GET (or ``method``), or of a multipart POST when fields/files are given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if fields is not None or files is not None:
        data, headers["Content-Type"] = multipart(fields, files)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def raw(port: int, path: str, *, fields: dict | None = None, files: dict | None = None, key: str | None = KEY):
    """(status, body) of a GET, or of a multipart POST when fields/files are given."""
    return call(port, path, fields=fields, files=files, key=key)[:2]


def health(port: int) -> dict:
    return json.loads(raw(port, "/health", key=None)[1])


def api_error(exc_info, status: int) -> dict:
    """The OpenAI error object of a failed client call, checked for status and shape."""
    exc = exc_info.value
    assert exc.status_code == status, exc.response.text
    error = exc.response.json()["error"]
    assert set(error) == ERROR_KEYS
    return error


def request_head(port: int, path: str, *, length: int, content_type: str = "application/octet-stream",
                 key: str | None = KEY) -> bytes:
    """The start line and headers of a POST announcing a body of ``length`` bytes."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Type: {content_type}",
             f"Content-Length: {length}"] + ([f"Authorization: Bearer {key}"] if key else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, timeout_s: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) read until the server closes the connection or the body is complete."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def main() -> None:
    """Serve the fake backend on a free port, written to PORT_FILE once listening (a subprocess server)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("port_file")
    parser.add_argument("--max-duration-s", type=float, default=600.0)
    parser.add_argument("--max-upload-bytes", type=int, default=25 * 1024 * 1024)
    args = parser.parse_args()
    app = create_app(FakeBackend(), api_key=KEY, model_id=MODEL, max_upload_bytes=args.max_upload_bytes,
                     max_duration_s=args.max_duration_s)
    with running(app) as port:
        Path(args.port_file).write_text(str(port))
        sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    main()
