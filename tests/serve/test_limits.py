"""speechtl serve under hostile or careless clients: uploads whose decoded audio would be huge, clients that go
away, bodies that stall, connections that never finish their headers, methods a route does not take.

Every server here is real uvicorn on 127.0.0.1 with the fake backend of serve_harness.py; the memory test
runs it as a subprocess and reads the kernel's peak resident size of that process.
"""

from __future__ import annotations

import io
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_harness import (  # noqa: E402
    KEY,
    MODEL,
    TEXT,
    FakeBackend,
    api_error,
    call,
    client,
    health,
    multipart,
    read_response,
    request_head,
    running,
    wav_bytes,
)

from speechtl.audio import AudioConfig, decode, process  # noqa: E402
from speechtl.serve import upload  # noqa: E402
from speechtl.serve.app import create_app  # noqa: E402
from speechtl.serve.connections import header_timeout_protocol  # noqa: E402

HERE = Path(__file__).resolve().parent
TRANSCRIBE = "/v1/audio/transcriptions"
GIB = 1 << 30


def flac_silence(path: Path, seconds: float, *, rate: int = 192_000, channels: int = 8) -> Path:
    """Digital silence as FLAC: compresses to almost nothing (60 s of 8 channels at 192 kHz: ~100 kB) and
    decodes to ``seconds * rate * channels`` samples."""
    block = np.zeros((rate, channels), np.int16)
    with sf.SoundFile(path, "w", rate, channels, format="FLAC", subtype="PCM_16") as out:
        for _ in range(int(seconds)):
            out.write(block)
    return path


def without_length(flac: bytes) -> bytes:
    """The FLAC with the sample count of its STREAMINFO zeroed: "unknown" (allowed for streamed FLAC)."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC"
    data[8 + 13] &= 0xF0  # 36-bit total: the low 4 bits of byte 13 of STREAMINFO, then bytes 14..17
    data[8 + 14:8 + 18] = b"\0\0\0\0"
    return bytes(data)


@pytest.fixture(scope="module")
def silence_60s(tmp_path_factory):
    return flac_silence(tmp_path_factory.mktemp("flac") / "silence.flac", 60).read_bytes()


@pytest.fixture()
def server():
    """(port, backend) of a server with a 5-s duration limit and a 2 MB upload limit."""
    backend = FakeBackend()
    app = create_app(backend, api_key=KEY, model_id=MODEL, max_upload_bytes=2_000_000, max_duration_s=5.0,
                     queue_size=2)
    with running(app) as port:
        yield port, backend


def transcribe(port: int, name: str, data: bytes, ctype: str = "audio/flac"):
    return client(port).audio.transcriptions.create(model=MODEL, file=(name, data, ctype))


# ------------------------------------------------------------------ decoding within limits


def wav_silence(seconds: float, rate: int, channels: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * rate), channels), np.int16), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.parametrize("kind,code", [("long", "audio_too_long"), ("channels", "too_many_channels"),
                                       ("rate", "sample_rate_too_high")])
def test_413_from_the_header_before_any_decoding(server, tmp_path, monkeypatch, silence_60s, kind, code):
    port, backend = server
    decoded = []
    for name in ("_soundfile_mono", "_ffmpeg_mono"):
        monkeypatch.setattr(upload, name, lambda *a, _name=name, **k: decoded.append(_name))
    name, data = {"long": ("x.flac", silence_60s),  # 60 s of 8 channels at 192 kHz > 5 s
                  "channels": ("x.wav", wav_silence(1, 16_000, 9)),
                  "rate": ("x.wav", wav_silence(1, 384_000, 1))}[kind]
    assert len(data) < 2_000_000
    with pytest.raises(openai.APIStatusError) as info:
        transcribe(port, name, data)
    error = api_error(info, 413)
    assert (error["code"], error["param"]) == (code, "file")
    assert decoded == [] and backend.calls == []


def test_a_header_without_the_length_is_measured_while_decoding(server, tmp_path):
    port, backend = server
    short = flac_silence(tmp_path / "short.flac", 3, rate=48_000, channels=2).read_bytes()
    long = flac_silence(tmp_path / "long.flac", 8, rate=48_000, channels=2).read_bytes()
    assert transcribe(port, "short.flac", without_length(short)).text == TEXT  # decoded, 3 s: served
    assert backend.calls[-1]["num_samples"] == 3 * 16000
    with pytest.raises(openai.APIStatusError) as info:  # decoded only up to the limit, then refused
        transcribe(port, "long.flac", without_length(long))
    assert api_error(info, 413)["code"] == "audio_too_long"
    assert len(backend.calls) == 1


def test_decoding_runs_on_the_worker_pool(server, monkeypatch):
    port, _ = server
    threads = []
    real = upload.decode_upload

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr("speechtl.serve.app.decode_upload", spy)
    assert transcribe(port, "clip.wav", wav_bytes(1.0), "audio/wav").text == TEXT
    assert len(threads) == 1 and threads[0].startswith("speechtl-serve")


def test_streamed_decoding_matches_decoding_the_whole_file(tmp_path, monkeypatch):
    """Block by block (mixed to mono, stream-resampled) gives what decoding the file at once gives."""
    t = np.arange(3 * 44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], axis=1)
    path = tmp_path / "tone.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    monkeypatch.setattr(upload, "_BLOCK_SAMPLES", 1 << 14)  # many small blocks
    with open(path, "rb") as f:
        streamed = upload.decode_upload(f, ".wav", "tone.wav", 10.0)
    whole = process(*decode(path), AudioConfig(trim=False, min_duration_s=0.0, segmentation=True,
                                               clipped_share=1.0))
    assert streamed.shape == whole.shape == (48000,) and streamed.dtype == np.float32
    assert np.abs(streamed - whole).max() < 1e-4


def test_multichannel_192k_upload_keeps_the_server_under_1_gib(tmp_path):
    """240 s of 8 channels at 192 kHz is 1.5 GB of float32 decoded whole; streamed to 16 kHz mono it is 15 MB."""
    data = flac_silence(tmp_path / "long.flac", 240).read_bytes()
    assert len(data) < 1_000_000
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, str(HERE / "serve_harness.py"), str(port_file)],
                            stdin=subprocess.PIPE, cwd=HERE.parents[1])
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        port = int(port_file.read_text())
        assert transcribe(port, "long.flac", data).text == TEXT  # within the 600-s limit: served
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
        print(f"server peak RSS (VmHWM): {peak_kib / 1024:.0f} MiB")
        assert peak_kib * 1024 < GIB
    finally:
        proc.stdin.close()
        proc.wait(30)


# ------------------------------------------------------------------ abandoned requests


def _send_and_drop_later(port: int, wav: bytes) -> socket.socket:
    """A transcription request sent whole on a socket the caller closes to abandon it."""
    body, ctype = multipart({"model": MODEL}, {"file": ("clip.wav", wav, "audio/wav")})
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request_head(port, TRANSCRIBE, length=len(body), content_type=ctype) + body)
    return sock


def _until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("where", ["queued", "running"])
def test_an_abandoned_request_frees_its_slot_within_a_second(where):
    gate = threading.Event()
    backend = FakeBackend(gate)
    app = create_app(backend, api_key=KEY, queue_size=1, model_id=MODEL)
    wav = wav_bytes(0.5)
    upload_ = ("clip.wav", wav, "audio/wav")
    with running(app) as p, ThreadPoolExecutor(2) as pool:
        try:
            if where == "queued":  # a live request holds the model; the one to drop waits behind it
                live = pool.submit(client(p).audio.transcriptions.create, model=MODEL, file=upload_)
                assert backend.started.wait(20)
                dropped = _send_and_drop_later(p, wav)
                _until(lambda: health(p)["waiting"] == 1, 20, "the request was not queued")
            else:  # the request to drop is in the model
                dropped = _send_and_drop_later(p, wav)
                assert backend.started.wait(20)
            assert health(p)["free_slots"] == (0 if where == "queued" else 1)
            dropped.close()
            _until(lambda: health(p)["free_slots"] == (1 if where == "queued" else 2), 1.0,
                   "the abandoned request still holds its slot after 1 s")
            assert health(p)["waiting"] == 0
            # a new request is admitted (it waits for the model), not refused with 503
            later = [pool.submit(client(p).audio.transcriptions.create, model=MODEL, file=upload_)]
            _until(lambda: later[0].done() or health(p)["waiting"] == 1, 20, "the new request was not queued")
            assert not later[0].done()
        finally:
            gate.set()
        assert later[0].result(timeout=30).text == TEXT
        if where == "queued":
            assert live.result(timeout=30).text == TEXT
        assert len(backend.calls) == 2  # queued: the dropped request never reached the model
        _until(lambda: health(p)["free_slots"] == 2 and health(p)["running"] == 0, 20, "slots not all free")


# ------------------------------------------------------------------ timeouts and refusals from the headers


def test_refused_from_the_headers_without_reading_the_body(server):
    port, _ = server
    for key, status in ((None, 401), ("sk-wrong", 401), (KEY, 413)):
        with socket.create_connection(("127.0.0.1", port)) as sock:  # 50 MB announced, not one byte sent
            sock.sendall(request_head(port, TRANSCRIBE, length=50_000_000, key=key))
            code, headers, body = read_response(sock)
            assert (code, headers.get("connection")) == (status, "close"), body
            assert sock.recv(1) == b""  # and the connection is closed
    with pytest.raises(openai.APIStatusError) as info:  # a client that sends on gets the answer too
        transcribe(port, "big.wav", b"\0" * 3_000_000, "audio/wav")
    assert api_error(info, 413)["code"] == "request_too_large"


def test_a_chunked_body_is_cut_past_the_limit(server):
    port, _ = server
    head = request_head(port, TRANSCRIBE, length=0, content_type="multipart/form-data; boundary=x").replace(
        b"Content-Length: 0", b"Transfer-Encoding: chunked")
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    chunk = b"%x\r\n" % 65536 + b"\0" * 65536 + b"\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + b"%x\r\n" % len(part) + part + b"\r\n")
        try:
            for _ in range(64):  # 4 MiB in all, over the 2 MB limit: the server stops reading on the way
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        code, headers, body = read_response(sock)
    assert (code, headers.get("connection")) == (413, "close") and b"request_too_large" in body


def test_an_answer_before_the_body_is_read_closes_the_connection(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:  # the form parser refuses the first bytes
        sock.sendall(request_head(port, TRANSCRIBE, length=1_000_000, content_type="multipart/form-data; boundary=x")
                     + b"\0" * 1000)
        code, headers, _ = read_response(sock)
        assert (code, headers.get("connection")) == (400, "close")
        assert sock.recv(1) == b""


def test_a_stalled_body_is_cut_after_body_timeout_s():
    app = create_app(FakeBackend(), api_key=KEY, model_id=MODEL, body_timeout_s=0.5, upload_timeout_s=60)
    with running(app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        body, ctype = multipart({"model": MODEL}, {"file": ("clip.wav", wav_bytes(1.0), "audio/wav")})
        sock.sendall(request_head(port, TRANSCRIBE, length=len(body), content_type=ctype) + body[:1000])
        code, headers, answer = read_response(sock)  # nothing more is sent
        assert (code, headers.get("connection")) == (408, "close")
        assert b"no part of it came for 0.5 s" in answer
        assert sock.recv(1) == b""


def test_a_trickled_body_is_cut_after_upload_timeout_s():
    app = create_app(FakeBackend(), api_key=KEY, model_id=MODEL, body_timeout_s=5, upload_timeout_s=1.0)
    with running(app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        body, ctype = multipart({"model": MODEL}, {"file": ("clip.wav", wav_bytes(1.0), "audio/wav")})
        sock.sendall(request_head(port, TRANSCRIBE, length=len(body), content_type=ctype))
        for offset in range(len(body)):  # a byte every 0.2 s, never a pause of 5 s, until the server answers
            sock.sendall(body[offset:offset + 1])
            if select.select([sock], [], [], 0.2)[0]:
                break
        code, headers, answer = read_response(sock)
        assert (code, headers.get("connection")) == (408, "close")
        assert b"not complete within 1 s" in answer


def test_a_connection_that_never_finishes_its_headers_is_closed():
    app = create_app(FakeBackend(), api_key=KEY, model_id=MODEL)
    with running(app, http=header_timeout_protocol(0.5)) as port:
        assert call(port, "/health", key=None)[0] == 200  # a whole request is served as ever
        with socket.create_connection(("127.0.0.1", port)) as silent, \
                socket.create_connection(("127.0.0.1", port)) as partial:
            partial.sendall(f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: x\r\n".encode())
            for sock in (silent, partial):
                sock.settimeout(20)
                assert sock.recv(1) == b""  # closed by the server


# ------------------------------------------------------------------ methods


@pytest.mark.parametrize("method,path,allow", [("GET", TRANSCRIBE, "POST"), ("DELETE", "/health", "GET"),
                                               ("PUT", "/v1/models", "GET")])
def test_405_carries_allow_in_openai_shape(server, method, path, allow):
    port, _ = server
    status, body, headers = call(port, path, method=method)
    assert (status, headers["Allow"]) == (405, allow)
    assert '"code":"method_not_allowed"' in body.replace(" ", "")
