# examples/pipecat_whisper.py: Pipecat's WhisperSTTService runs a speechtl CT2 export in process (faster-whisper)
import os

from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language

stt = WhisperSTTService(
    device="cpu",
    compute_type="int8",
    settings=WhisperSTTService.Settings(
        model=os.environ.get("SPEECHTL_CT2_MODEL", "runs/es-medical/export/ct2"), language=Language.ES
    ),
)
