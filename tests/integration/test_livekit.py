"""LiveKit Agents (in .venv-livekit) against speechtl serve: the STT of examples/livekit_stt.py, run verbatim.

It is LiveKit's ``StreamAdapter``: Silero VAD cuts the incoming audio frames into utterances and the OpenAI
STT sends each utterance to the server. speech.wav holds two prompts, each followed by a second of silence.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import runpy
from pathlib import Path

from livekit import rtc
from livekit.agents.stt import SpeechEventType

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000
FRAME_SAMPLES = SAMPLE_RATE // 50  # 20-ms frames, as a room's audio track delivers them
UTTERANCES = 2


async def stream_events(stt, pcm: bytes) -> list:
    """Every speech event of one ``stt.stream()`` fed ``pcm`` as audio frames, then closed."""
    stream = stt.stream()
    for start in range(0, len(pcm) // 2, FRAME_SAMPLES):
        data = pcm[2 * start:2 * (start + FRAME_SAMPLES)]
        stream.push_frame(rtc.AudioFrame(data, SAMPLE_RATE, 1, len(data) // 2))
    stream.end_input()
    try:
        return [event async for event in stream]
    finally:
        await stream.aclose()
        await stt.aclose()


def test_environment_has_no_torch():
    names = {dist.metadata["Name"].lower() for dist in importlib.metadata.distributions()}
    assert "livekit-agents" in names and not names & {"torch", "torchaudio"}


def test_stream_adapter_with_silero_vad_delivers_what_speechtl_serve_answers(example_env, speech):
    server = example_env
    stt = runpy.run_path(str(ROOT / "examples" / "livekit_stt.py"))["stt"]
    events = asyncio.run(asyncio.wait_for(stream_events(stt, speech), timeout=120))

    kinds = [e.type for e in events]
    assert kinds.count(SpeechEventType.START_OF_SPEECH) == kinds.count(SpeechEventType.END_OF_SPEECH) == UTTERANCES
    finals = [e for e in events if e.type == SpeechEventType.FINAL_TRANSCRIPT]
    exchanges = server.transcriptions()
    assert len(exchanges) == len(finals) == UTTERANCES, (kinds, [e.status for e in exchanges])
    clips = []
    for exchange, final in zip(exchanges, finals, strict=True):
        assert exchange.status == 200, exchange.response
        assert exchange.headers["authorization"] == f"Bearer {server.api_key}"
        upload = exchange.upload()
        assert (upload.fields["model"], upload.fields["language"]) == ("speechtl", "es")
        assert upload.fields["response_format"] == "json"
        rate, channels, pcm = upload.wav()
        assert (rate, channels) == (SAMPLE_RATE, 1) and 0.3 * SAMPLE_RATE * 2 < len(pcm) < len(speech)
        clips.append(pcm)

        direct = server.transcribe_directly(upload)  # the same audio and fields, straight to the server
        assert direct["text"].strip(), "the tiny model wrote nothing: nothing to compare"
        [alternative] = final.alternatives
        assert (alternative.text, alternative.language) == (direct["text"], "es")
    # each utterance is a slice of the audio as it was fed (with the VAD's padding), the first one first
    first, second = (speech.find(clip) for clip in clips)
    assert 0 <= first < second and first % 2 == second % 2 == 0
