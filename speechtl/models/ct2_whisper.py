"""Transcribe with a CTranslate2 (faster-whisper) Whisper model directory.

The reference runtime: bundled models are checked against it, and data prep
uses it for spot checks of synthetic speech.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class CT2Whisper:
    """Greedy, no-timestamp Whisper decoding through the ``ctranslate2`` package."""

    def __init__(self, model_dir: Path | str, *, num_threads: int = 0):
        try:
            import ctranslate2
            import tokenizers
            from transformers import WhisperFeatureExtractor
        except ImportError as exc:
            raise ImportError(f"CTranslate2 Whisper needs {exc.name}: pip install 'speechtl[bundled,train]'") from exc
        self.model_dir = Path(model_dir)
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device="cpu", intra_threads=num_threads)
        self.tokenizer = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.features = WhisperFeatureExtractor(feature_size=self.model.n_mels)

    def prompt(self, lang: str | None, task: str = "transcribe") -> list[str]:
        tokens = ["<|startoftranscript|>"]
        if lang:
            tokens.append(f"<|{lang}|>")
        return tokens + [f"<|{task}|>", "<|notimestamps|>"]

    def generate_ids(
        self, audios: Sequence[np.ndarray], lang: str | None, *, beam_size: int = 1, max_length: int = 224
    ) -> list[list[int]]:
        """Token ids (without the prompt) for 16 kHz mono float arrays."""
        import ctranslate2

        mel = self.features(list(audios), sampling_rate=16000, return_tensors="np").input_features
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32))
        prompt = self.prompt(lang)
        results = self.model.generate(
            storage, [prompt] * len(audios), beam_size=beam_size, max_length=max_length, suppress_blank=True
        )
        return [r.sequences_ids[0] for r in results]

    def transcribe(self, audios: Sequence[np.ndarray], lang: str | None = None, **kwargs) -> list[str]:
        return [self.tokenizer.decode(ids).strip() for ids in self.generate_ids(audios, lang, **kwargs)]
