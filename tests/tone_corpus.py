"""Tiny corpora of sine tones for the training and pipeline tests (the models are random: no speech needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def write_tone(path: Path, freq_hz: float, seconds: float) -> None:
    t = np.arange(int(SR * seconds)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32), SR)


def tone_rows(root: Path, texts: list[str]) -> list[dict]:
    """One tone per transcript in ``root`` (one speaker), as manifest rows."""
    rows = []
    for i, text in enumerate(texts):
        path = root / f"u{i}.wav"
        write_tone(path, 250 + 130 * i, 0.5 + 0.1 * i)
        rows.append({"id": f"u{i}", "audio_filepath": str(path), "text": text, "duration": 0.5 + 0.1 * i,
                     "speaker": "s", "lang": "es"})
    return rows


def folder_corpus(corpus: Path, sentences: list[str], speakers: int = 3) -> Path:
    """A folder corpus: ``spk<k>/u<i>.wav`` + ``.txt`` for every sentence and speaker."""
    for spk in range(speakers):
        (corpus / f"spk{spk}").mkdir(parents=True)
        for i, text in enumerate(sentences):
            write_tone(corpus / f"spk{spk}" / f"u{i}.wav", 200 + 60 * i + 15 * spk, 0.6 + 0.05 * i)
            (corpus / f"spk{spk}" / f"u{i}.txt").write_text(text, encoding="utf-8")
    return corpus
