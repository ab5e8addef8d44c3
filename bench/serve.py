"""Latency and throughput of ``speechtl serve`` against faster-whisper called in process, on the same clip.

Baseline (named, measured in the same run): faster-whisper's ``WhisperModel`` in this process, loaded as the
server's runtime loads it (same compute type, ``cpu_threads=0``, ``num_workers=--workers``) and called as the
server's :meth:`speechtl.runtimes.FasterWhisper.transcript` calls it (the clip padded to one 30-s window with
``pad_to_window``, same language, same beam width, OpenAI's temperature fallback, no VAD), on audio already
in memory: what a voice agent that embeds faster-whisper (Pipecat's ``WhisperSTTService``) pays. Its audio is
the clip decoded once, before the timings, by the server's own upload decoder, so both see the same samples.
Against it: ``speechtl serve`` on the same model directory, started here as a subprocess on a free
127.0.0.1 port, answering ``POST /v1/audio/transcriptions`` (multipart, ``response_format=json``): each
latency covers the upload, the server's decoding and level normalization, the queue and the model.

For each ``--concurrency`` level, ``--requests`` requests go out from that many client threads (one
keep-alive connection each; in process: that many threads calling the one model), after one untimed warm-up
call of each system. The two systems alternate level by level, never at the same time. Prints p50 and p95
latency of the 200 answers, the longest request of all, throughput (200 answers over the level's wall time),
non-200 and 5xx counts, and the server's p50 and throughput as ratios of the baseline's; then whether any
request took longer than the client timeout (``--timeout-s``, 60 s: the request timeout the README asks
voice-agent clients to allow) and whether any 5xx came back. The server's own timeouts
(``DEFAULT_*_TIMEOUT_S``) bound the arrival of headers and uploads, not the transcription. More concurrent
clients than ``--workers + --queue-size`` get 503 by design.

Run: ``python bench/serve.py runs/es-medical/export/ct2 --manifest runs/es-medical/data/test.jsonl`` or
``python bench/serve.py MODEL_DIR --audio /usr/share/asterisk/sounds/es_MX_f_Allison/agent-loginok.g722 ...``
"""

from __future__ import annotations

import argparse
import http.client
import inspect
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.audio import TARGET_SAMPLE_RATE, load as load_audio, write_audio
from speechtl.data.manifest import read_manifest
from speechtl.fsio import atomic_write_text
from speechtl.models.ct2.whisper import pad_to_window
from speechtl.runtimes import FasterWhisper
from speechtl.runtimes.faster_whisper import FALLBACK_TEMPERATURES
from speechtl.serve import app as serve_app
from speechtl.serve.upload import decode_upload

MODEL_ID = "bench"
GAP_S = 0.25  # silence between audio files joined into one clip
HEALTH_POLL_S = 0.25
STOP_GRACE_S = 15.0  # after SIGINT (uvicorn's graceful stop), before SIGTERM, then SIGKILL
BEAM_SIZE = inspect.signature(FasterWhisper).parameters["beam_size"].default  # the server's (load_runtime's)

Call = Callable[[dict[str, Any]], tuple[int, str]]  # per-client state -> (HTTP status, transcript)


@dataclass
class Level:
    """One system at one concurrency: each request's latency (s), status (0: no response) and text."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        """Latencies and throughput count the 200s only (a quick 503 is no transcription); max: all requests."""
        status = np.asarray(self.statuses)
        every = np.asarray(self.latencies_s) if self.latencies_s else np.zeros(1)
        ok = np.asarray(self.latencies_s)[status == 200]
        return {"concurrency": self.concurrency, "requests": len(self.statuses), "ok": int(len(ok)),
                "p50_s": float(np.percentile(ok, 50)) if len(ok) else None,
                "p95_s": float(np.percentile(ok, 95)) if len(ok) else None,
                "max_s": float(every.max()),
                "throughput_rps": int((status == 200).sum()) / self.wall_s if self.wall_s else 0.0,
                "non_200": int((status != 200).sum()), "status_5xx": int(((status >= 500) & (status < 600)).sum()),
                "no_response": int((status == 0).sum()), "wall_s": self.wall_s,
                "statuses": {str(s): int((status == s).sum()) for s in sorted(set(self.statuses))}}


def run_level(call: Call, num_requests: int, concurrency: int, stop: threading.Event) -> Level:
    """``num_requests`` calls from ``concurrency`` threads, each taking the next request when it is free."""
    level = Level(concurrency)
    lock = threading.Lock()
    issued = [0]

    def client() -> None:
        state: dict[str, Any] = {}
        try:
            while not stop.is_set():
                with lock:
                    if issued[0] >= num_requests:
                        return
                    issued[0] += 1
                started = time.perf_counter()
                status, text = call(state)
                latency = time.perf_counter() - started
                with lock:
                    level.latencies_s.append(latency)
                    level.statuses.append(status)
                    level.texts.append(text)
        finally:
            if state.get("conn") is not None:
                state["conn"].close()

    threads = [threading.Thread(target=client, daemon=True, name=f"bench-client-{i}") for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    level.wall_s = time.perf_counter() - started
    return level


def multipart(fields: dict[str, str], clip: Path) -> tuple[bytes, str]:
    """A multipart/form-data body with ``fields`` and the clip as ``file``; and its Content-Type."""
    boundary = "speechtl-bench-" + secrets.token_hex(8)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip.name}"\r\n'
                 "Content-Type: audio/wav\r\n\r\n".encode() + clip.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def server_call(port: int, api_key: str, clip: Path, language: str, timeout_s: float) -> Call:
    """One transcription request per call, on the client's own keep-alive connection."""
    body, content_type = multipart({"model": MODEL_ID, "language": language, "response_format": "json"}, clip)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {api_key}"}

    def call(state: dict[str, Any]) -> tuple[int, str]:
        if state.get("conn") is None:
            state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        try:
            state["conn"].request("POST", "/v1/audio/transcriptions", body=body, headers=headers)
            response = state["conn"].getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            state.pop("conn").close()
            return 0, f"{type(exc).__name__}: {exc}"
        if response.status != 200:
            return response.status, data[:200].decode("utf-8", "replace")
        return 200, json.loads(data)["text"]

    return call


def baseline_call(model: Any, audio: np.ndarray, language: str) -> Call:
    """faster-whisper in process, called as the server's FasterWhisper.transcript calls it."""
    duration_s = len(audio) / TARGET_SAMPLE_RATE

    def call(_: dict[str, Any]) -> tuple[int, str]:
        try:
            segments, _info = model.transcribe(pad_to_window(audio), language=language, task="transcribe",
                                               initial_prompt=None, temperature=FALLBACK_TEMPERATURES,
                                               beam_size=BEAM_SIZE, word_timestamps=False, vad_filter=False)
            return 200, "".join(s.text for s in segments if s.start < duration_s).strip()  # as the server drops
        except Exception as exc:  # noqa: BLE001 -- counted as the server counts a model failure: a 500
            return 500, f"{type(exc).__name__}: {exc}"

    return call


class Server:
    """``speechtl serve`` as a subprocess in its own process group; :meth:`stop` leaves nothing behind."""

    def __init__(self, args: argparse.Namespace, log_path: Path) -> None:
        self.port = free_port()
        self.api_key = secrets.token_urlsafe(16)
        self.log_path = log_path
        command = [sys.executable, "-m", "speechtl.cli", "serve", "--model", str(args.model), "--model-id", MODEL_ID,
                   "--host", "127.0.0.1", "--port", str(self.port), "--compute-type", args.compute_type,
                   "--language", args.language, "--workers", str(args.workers), "--queue-size", str(args.queue_size)]
        env = {**os.environ, "SPEECHTL_API_KEY": self.api_key}  # the key stays off the command line
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"speechtl serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HEALTH_POLL_S * 4)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(HEALTH_POLL_S)
        raise RuntimeError(f"speechtl serve not healthy after {timeout_s:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGINT (graceful), then SIGTERM, then SIGKILL; then SIGKILL to whatever is left in its group."""
        for sig, wait_s in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group (start_new_session): decoders it started
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.returncode


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_clip(args: argparse.Namespace, out: Path) -> tuple[Path, float, list[str]]:
    """The clip both systems get, as 16 kHz mono 16-bit wav: the first utterance of ``--manifest``, or the
    ``--audio`` files joined with short silences, cut to ``--clip-s``. Real audio only; nothing synthesized."""
    sources = [Path(read_manifest(args.manifest)[0].audio_filepath)] if args.manifest else list(args.audio)
    gap = np.zeros(int(GAP_S * TARGET_SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    used: list[str] = []
    for source in sources:
        if parts and sum(map(len, parts)) >= args.clip_s * TARGET_SAMPLE_RATE:
            break
        parts += [gap, load_audio(source)] if parts else [load_audio(source)]
        used.append(str(source))
    audio = np.concatenate(parts)[:int(args.clip_s * TARGET_SAMPLE_RATE)]
    write_audio(out, audio, TARGET_SAMPLE_RATE)
    return out, len(audio) / TARGET_SAMPLE_RATE, used


def load_baseline(args: argparse.Namespace, clip: Path) -> tuple[Any, np.ndarray]:
    """The in-process model, loaded as the server's runtime loads it, and the clip decoded as the server
    decodes an upload (level-normalized 16 kHz mono)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(args.model), device="cpu", compute_type=args.compute_type, cpu_threads=0,
                         num_workers=args.workers)
    with clip.open("rb") as handle:
        audio = decode_upload(handle, clip.suffix, clip.name, serve_app.DEFAULT_MAX_DURATION_S)
    return model, audio


def measure(args: argparse.Namespace, server: Server, clip: Path, stop: threading.Event) -> list[dict[str, Any]]:
    """Both systems at each concurrency level, alternating: baseline first, then the server."""
    model, audio = load_baseline(args, clip)
    systems = {"in-process": baseline_call(model, audio, args.language),
               "serve": server_call(server.port, server.api_key, clip, args.language, args.timeout_s)}
    warm = {name: run_level(call, 1, 1, stop) for name, call in systems.items()}  # untimed warm-up
    for name, level in warm.items():
        if level.statuses != [200]:
            raise RuntimeError(f"warm-up of {name} failed: {level.statuses} {level.texts}\n{server.log_tail()}")
    reference = warm["in-process"].texts[0]
    rows = []
    for concurrency in args.concurrency:
        for name, call in systems.items():
            level = run_level(call, args.requests, concurrency, stop)
            figures = level.figures() | {"system": name}
            figures["same_text"] = sum(t == reference for s, t in zip(level.statuses, level.texts) if s == 200)
            rows.append(figures)
    return rows


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The server's p50 and throughput as ratios of the baseline's at the same concurrency."""
    base = {r["concurrency"]: r for r in rows if r["system"] == "in-process"}
    for row in rows:
        ref = base[row["concurrency"]]
        row["p50_ratio"] = row["p50_s"] / ref["p50_s"] if row["p50_s"] and ref["p50_s"] else None  # None: no 200
        row["throughput_ratio"] = row["throughput_rps"] / ref["throughput_rps"] if ref["throughput_rps"] else None
    return rows


def _cell(value: float | None, width: int, digits: int, suffix: str = "") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width - len(suffix)}.{digits}f}{suffix}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'conc':>4} {'system':<11} {'n':>4} {'p50 s':>8} {'p95 s':>8} {'max s':>8} {'req/s':>8} "
          f"{'non-200':>7} {'5xx':>4} {'p50 x':>7} {'req/s x':>8} {'same text':>9}")
    for r in rows:
        served = r["system"] == "serve"
        ratios = (f"{_cell(r['p50_ratio'], 7, 2, 'x')} {_cell(r['throughput_ratio'], 8, 2, 'x')}" if served
                  else f"{'':>7} {'':>8}")
        print(f"{r['concurrency']:>4} {r['system']:<11} {r['requests']:>4} {_cell(r['p50_s'], 8, 3)} "
              f"{_cell(r['p95_s'], 8, 3)} {_cell(r['max_s'], 8, 3)} {r['throughput_rps']:8.2f} {r['non_200']:>7} "
              f"{r['status_5xx']:>4} {ratios} {r['same_text']:>4}/{r['requests']:<4}")


def verdicts(rows: list[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    """Whether any server request outlasted the client timeout, and whether any 5xx came back."""
    served = [r for r in rows if r["system"] == "serve"]
    max_s = max((r["max_s"] for r in served), default=0.0)
    statuses: dict[str, int] = {}
    for r in served:
        for status, count in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    return {"server_max_latency_s": max_s, "client_timeout_s": timeout_s, "over_timeout": max_s > timeout_s,
            "any_5xx": any(r["status_5xx"] for r in served), "server_statuses": statuses}


def print_verdicts(v: dict[str, Any]) -> None:
    print(f"server request over the client timeout ({v['client_timeout_s']:g} s): "
          f"{'YES' if v['over_timeout'] else 'no'} (longest request {v['server_max_latency_s']:.3f} s)")
    print(f"any 5xx from the server: {'YES' if v['any_5xx'] else 'no'}; statuses: {v['server_statuses']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a CTranslate2 Whisper directory (model.bin), e.g. runs/NAME/export/ct2")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", type=Path, nargs="+", help="real speech file(s), joined into the clip")
    source.add_argument("--manifest", type=Path, help="take the manifest's first utterance as the clip")
    p.add_argument("--clip-s", type=float, default=3.0, help="cut the clip to this many seconds")
    p.add_argument("--requests", type=int, default=24, help="requests per concurrency level and system")
    p.add_argument("--concurrency", default="1,4,8", help="comma-separated numbers of concurrent clients")
    p.add_argument("--workers", type=int, default=1, help="the server's worker threads (and the model's num_workers)")
    p.add_argument("--queue-size", type=int, default=serve_app.DEFAULT_QUEUE_SIZE, help="the server's queue")
    p.add_argument("--compute-type", default="int8")
    p.add_argument("--language", default="es")
    p.add_argument("--timeout-s", type=float, default=60.0, help="client timeout per request, seconds")
    p.add_argument("--startup-timeout-s", type=float, default=120.0, help="wait this long for /health")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not (args.model / "model.bin").is_file():
        p.error(f"{args.model}: no model.bin; give a CTranslate2 directory")
    if min(args.concurrency, default=0) < 1 or args.requests < 1 or args.workers < 1 or args.clip_s <= 0:
        p.error("--concurrency values, --requests, --workers and --clip-s must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below, as Ctrl-C does
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="speechtl-bench-serve-") as tmp:
        clip, clip_s, used = make_clip(args, Path(tmp) / "clip.wav")
        server = Server(args, Path(tmp) / "serve.log")
        try:
            server.wait_healthy(args.startup_timeout_s)
            rows = with_ratios(measure(args, server, clip, stop))
        finally:
            stop.set()
            returncode = server.stop()
    print(f"clip: {clip_s:.2f} s from {', '.join(used)}; model {args.model} ({args.compute_type}), language "
          f"{args.language}, {args.workers} worker(s), queue {args.queue_size}, {args.requests} requests per level, "
          f"beam {BEAM_SIZE}, {os.cpu_count()} CPUs; server stopped (exit {returncode})")
    if args.requests < max(args.concurrency):
        print(f"note: {args.requests} requests per level: fewer clients than {max(args.concurrency)} ever run at once")
    if max(args.concurrency) > args.workers + args.queue_size:
        print(f"note: over {args.workers + args.queue_size} concurrent requests (workers + queue) get 503 by design")
    print_table(rows)
    verdict = verdicts(rows, args.timeout_s)
    print_verdicts(verdict)
    if args.json:
        payload = {"settings": vars(args), "clip": {"duration_s": clip_s, "sources": used}, "beam_size": BEAM_SIZE,
                   "levels": rows, **verdict}
        atomic_write_text(args.json, json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # main's cleanup has run: the server is stopped
        print("interrupted; server stopped", file=sys.stderr)
        sys.exit(130)
