# examples/livekit_stt.py: LiveKit Agents on `speechtl serve`; the OpenAI STT is not streaming, so a VAD cuts the audio
import os

from livekit.agents import stt as agents_stt
from livekit.plugins import openai, silero

stt = agents_stt.StreamAdapter(
    stt=openai.STT(
        base_url=os.environ.get("SPEECHTL_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ["SPEECHTL_API_KEY"],  # the key `speechtl serve` reads from the same variable
        model="speechtl",
        language="es",
    ),
    vad=silero.VAD.load(),
)
