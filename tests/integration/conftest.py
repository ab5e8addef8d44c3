"""Voice-agent clients against speechtl: each client's tests run in that client's own virtualenv (`make integration`).

`make integration` sets, for each run:

- ``SPEECHTL_CLIENT``: ``pipecat`` or ``livekit``, the client whose tests (``test_<client>.py``) this run collects;
  without it (``make test``, the main virtualenv) no client test is collected, only test_readme_snippets.py;
- ``SPEECHTL_INTEGRATION_ASSETS``: the folder ``make_assets.py`` filled (tiny Whisper, its CT2 export, speech.wav);
- ``SPEECHTL_PYTHON``: the main virtualenv's python, which runs ``speechtl serve`` (the client venvs have no torch).

The server runs behind a recording proxy: a test sees exactly what the client sent (form fields, uploaded audio)
and can ask the server directly for the same audio, to compare with what the client delivered.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.client
import http.server
import io
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ("pipecat", "livekit")
CLIENT = os.environ.get("SPEECHTL_CLIENT", "")
collect_ignore_glob = [f"test_{name}*.py" for name in CLIENTS if name != CLIENT]
if CLIENT:  # a client's run collects that client's tests only; the README check runs in `make test`
    collect_ignore_glob.append("test_readme*.py")

API_KEY = "sk-speechtl-integration"
SAMPLE_RATE = 16000
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "proxy-connection"}


@dataclass
class Upload:
    """One multipart form as the server received it: its fields, and the file's name, type and bytes."""

    fields: dict[str, str]
    filename: str
    content_type: str
    data: bytes

    def wav(self) -> tuple[int, int, bytes]:
        """(sample rate, channels, 16-bit PCM) of the uploaded WAV."""
        with wave.open(io.BytesIO(self.data)) as w:
            assert w.getsampwidth() == 2, "not 16-bit PCM"
            return w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())


@dataclass
class Exchange:
    """A request the proxy passed on and the answer it passed back."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    response: bytes

    def upload(self) -> Upload:
        ctype = self.headers.get("content-type", "")
        assert ctype.startswith("multipart/form-data"), ctype
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode("latin-1") + self.body)
        fields, files = {}, []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename() is None:
                fields[name] = part.get_payload(decode=True).decode()
            else:
                files.append((part.get_filename(), part.get_content_type(), part.get_payload(decode=True)))
        assert len(files) == 1, f"{len(files)} files in one request"
        return Upload(fields, *files[0])


@dataclass
class Server:
    """``speechtl serve`` (``direct_url``) and the recording proxy in front of it (``url``, what clients get)."""

    url: str
    direct_url: str
    api_key: str = API_KEY
    exchanges: list[Exchange] = field(default_factory=list)

    def transcriptions(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == "POST" and e.path == "/v1/audio/transcriptions"]

    def transcribe_directly(self, upload: Upload) -> dict:
        """The server's JSON answer to ``upload`` (same file and fields) sent straight to it, not through a client."""
        return json.loads(post_multipart(f"{self.direct_url}/audio/transcriptions", upload))


def post_multipart(url: str, upload: Upload) -> bytes:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in upload.fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{upload.filename}"\r\n'
                 f"Content-Type: {upload.content_type}\r\n\r\n".encode() + upload.data + b"\r\n")
    request = urllib.request.Request(url, data=b"".join(parts) + f"--{boundary}--\r\n".encode(), headers={
        "Authorization": f"Bearer {API_KEY}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: {exc.code} {exc.read().decode(errors='replace')}") from exc


def _proxy_handler(upstream: str, exchanges: list[Exchange]) -> type:
    host, port = upstream.split(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            body = self._body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            conn = http.client.HTTPConnection(host, int(port), timeout=120)
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            conn.close()
            exchanges.append(Exchange(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                      body, answer.status, data))
            self.send_response(answer.status)
            for k, v in answer.getheaders():
                if k.lower() not in _HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _forward

        def log_message(self, *args: object) -> None:  # quiet
            pass

    return Handler


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"speechtl serve exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"speechtl serve not healthy after {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def assets() -> Path:
    folder = os.environ.get("SPEECHTL_INTEGRATION_ASSETS")
    if not folder:
        pytest.fail("SPEECHTL_INTEGRATION_ASSETS is not set: run `make integration`")
    return Path(folder).resolve()


@pytest.fixture(scope="session")
def speech(assets) -> bytes:
    """speech.wav as 16 kHz mono 16-bit PCM bytes: two Spanish prompts, each followed by a second of silence."""
    with wave.open(str(assets / "speech.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        return w.readframes(w.getnframes())


@pytest.fixture(scope="session")
def server(assets, tmp_path_factory):
    """``speechtl serve`` on the tiny random Whisper (transformers: greedy, the same audio gives the same text),
    started from the main virtualenv with an API key, behind the recording proxy."""
    python = os.environ.get("SPEECHTL_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
    port, log = _free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "SPEECHTL_API_KEY": API_KEY}
    with log.open("wb") as out:
        process = subprocess.Popen([python, "-m", "speechtl.cli", "serve", "--model", str(assets / "tiny-whisper"),
                                    "--port", str(port), "--model-id", "speechtl"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    direct = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(direct, process, log)
        exchanges: list[Exchange] = []
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(f"127.0.0.1:{port}", exchanges))
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        try:
            yield Server(f"http://127.0.0.1:{proxy.server_port}/v1", f"{direct}/v1", exchanges=exchanges)
        finally:
            proxy.shutdown()
            proxy.server_close()
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def example_env(monkeypatch, server):
    """The variables the examples read, pointing them at the proxy in front of the test server."""
    monkeypatch.setenv("SPEECHTL_BASE_URL", server.url)
    monkeypatch.setenv("SPEECHTL_API_KEY", API_KEY)
    server.exchanges.clear()
    return server

