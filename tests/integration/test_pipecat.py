"""Pipecat (pipecat-ai, in .venv-pipecat) against speechtl: the services of examples/pipecat_*.py, run verbatim.

The services run in a real Pipecat pipeline (``pipecat.tests.utils.run_test``) and get what a transport and a VAD
would give them: user-started-speaking, 20-ms audio frames, user-stopped-speaking.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import runpy
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from pipecat.frames.frames import (
    ErrorFrame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.tests.utils import run_test

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000
FRAME_BYTES = SAMPLE_RATE * 2 // 50  # 20 ms of 16-bit mono
TRAILING_SILENCE_BYTES = SAMPLE_RATE  # Pipecat's segmented STT pads each segment with 0.5 s of silence
NO_SPEECH_PROB = 0.4  # WhisperSTTService's default: a segment at or above it is dropped
CT2_SEED = 0


def example(name: str):
    return runpy.run_path(str(ROOT / "examples" / name))["stt"]


def transcribe(stt, pcm: bytes) -> list:
    """The TranscriptionFrames ``stt`` pushes for ``pcm`` spoken as one user turn."""
    frames = [VADUserStartedSpeakingFrame()]
    frames += [InputAudioRawFrame(audio=pcm[i:i + FRAME_BYTES], sample_rate=SAMPLE_RATE, num_channels=1)
               for i in range(0, len(pcm), FRAME_BYTES)]
    frames.append(VADUserStoppedSpeakingFrame())
    down, up = asyncio.run(run_test(stt, frames_to_send=frames))
    errors = [f for f in [*down, *up] if isinstance(f, ErrorFrame)]
    assert not errors, errors
    return [f for f in down if isinstance(f, TranscriptionFrame)]


def test_environment_has_no_torch():
    names = {dist.metadata["Name"].lower() for dist in importlib.metadata.distributions()}
    assert "pipecat-ai" in names and not names & {"torch", "torchaudio"}


def test_openai_stt_service_delivers_what_speechtl_serve_answers(example_env, speech):
    server = example_env
    frames = transcribe(example("pipecat_stt.py"), speech)

    [exchange] = server.transcriptions()  # one user turn, one request
    assert exchange.status == 200, exchange.response
    assert exchange.headers["authorization"] == f"Bearer {server.api_key}"
    upload = exchange.upload()
    assert upload.fields["model"] == "speechtl" and upload.fields["language"] == "es"
    assert upload.fields.get("response_format", "json") == "json"
    assert upload.wav() == (SAMPLE_RATE, 1, speech + bytes(TRAILING_SILENCE_BYTES))

    direct = server.transcribe_directly(upload)  # the same audio and fields, straight to the server
    assert direct["text"].strip(), "the tiny model wrote nothing: nothing to compare"
    assert json.loads(exchange.response)["text"] == direct["text"]
    assert [f.text for f in frames] == [direct["text"].strip()]


def test_whisper_stt_service_runs_the_ct2_export(monkeypatch, assets, speech):
    monkeypatch.setenv("SPEECHTL_CT2_MODEL", str(assets / "tiny-whisper-ct2"))
    # a random model falls back to sampling (temperature > 0): seeded before each model load, the two model
    # instances below draw the same numbers
    ctranslate2.set_random_seed(CT2_SEED)
    stt = example("pipecat_whisper.py")
    calls = []
    real = stt._model.transcribe

    def spy(audio, **kwargs):
        calls.append((audio, kwargs))
        return real(audio, **kwargs)

    stt._model.transcribe = spy
    frames = transcribe(stt, speech)

    [(audio, kwargs)] = calls
    expected_audio = np.frombuffer(speech + bytes(TRAILING_SILENCE_BYTES), np.int16).astype(np.float32) / 32768
    assert np.array_equal(audio, expected_audio)  # as it came: not padded to a 30-s window (README)
    assert kwargs["language"] == "es"

    ctranslate2.set_random_seed(CT2_SEED)
    reference = WhisperModel(str(assets / "tiny-whisper-ct2"), device="cpu", compute_type="int8")
    segments, info = reference.transcribe(expected_audio, language="es")
    expected = "".join(f"{s.text} " for s in segments if s.no_speech_prob < NO_SPEECH_PROB)
    assert info.language == "es" and expected.strip(), "the tiny model wrote nothing: nothing to compare"
    assert [f.text for f in frames] == [expected]
