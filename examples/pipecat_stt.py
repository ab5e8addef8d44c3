# examples/pipecat_stt.py: Pipecat's OpenAI STT service on `speechtl serve`
import os

from pipecat.services.openai.stt import OpenAISTTService
from pipecat.transcriptions.language import Language

stt = OpenAISTTService(
    base_url=os.environ.get("SPEECHTL_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ["SPEECHTL_API_KEY"],  # the key `speechtl serve` reads from the same variable
    settings=OpenAISTTService.Settings(model="speechtl", language=Language.ES),
)
