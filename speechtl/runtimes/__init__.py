"""The runtimes a model runs on, one module each, behind one interface that evaluation, the export checks
and serving all use:

- ``transcribe(audios, lang, *, prompt=None, batch_size=8) -> list[str]``: one greedy transcript per
  16 kHz mono clip (:func:`speechtl.evaluate.decode.evaluate_manifest` scores these);
- ``transcript(audio, *, language, prompt, temperature, word_timestamps) -> Transcript``: one request of
  ``speechtl serve``, with segments (and words where the runtime has them); plus ``name``,
  ``max_concurrency``, ``supports_prompt`` and ``supports_words``.

:class:`~speechtl.runtimes.faster_whisper.FasterWhisper` runs a CTranslate2 directory,
:class:`~speechtl.runtimes.transformers.Transformers` a transformers (or speechtl CTC) directory on
PyTorch, :class:`~speechtl.runtimes.onnx.OnnxCtc` an ONNX CTC export (text only). :func:`load_runtime`
picks one for a directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from speechtl.runtimes.faster_whisper import FasterWhisper
from speechtl.runtimes.onnx import ONNX_META, OnnxCtc
from speechtl.runtimes.transcript import Transcript
from speechtl.runtimes.transformers import Transformers

__all__ = ["FasterWhisper", "OnnxCtc", "Runtime", "Transformers", "load_runtime"]


class Runtime(Protocol):
    """What evaluation, export checks (``transcribe``) and serving (``transcript``) call."""

    name: str  # what runs the model, for logs, metrics and /health
    max_concurrency: int  # calls that may run at once (each on its own thread)
    supports_prompt: bool
    supports_words: bool  # word timestamps

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:
        """One greedy transcript per 16 kHz mono float32 clip."""
        ...

    def transcript(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0, word_timestamps: bool = False,
                   hotwords: str | None = None) -> Transcript:
        """One request (``hotwords``: terms to prompt every window with); raises
        :class:`~speechtl.runtimes.transcript.RequestError` for what was asked wrongly."""
        ...


def load_runtime(model_dir: Path | str, *, lang: str | None = None, compute_type: str = "int8",
                 num_workers: int = 1, cpu_threads: int = 0, pad: bool = True) -> Any:
    """The runtime of a model directory: faster-whisper for CTranslate2 (``model.bin``), onnxruntime for an
    ONNX CTC export, PyTorch for a transformers or speechtl CTC directory. ``lang``: the default language
    (a CTC model's only one)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: not a model directory")
    if (model_dir / "model.bin").is_file():
        return FasterWhisper(model_dir, compute_type=compute_type, num_workers=num_workers,
                             cpu_threads=cpu_threads, language=lang, pad=pad)
    if (model_dir / ONNX_META).is_file():
        return OnnxCtc(model_dir)
    return Transformers.load(model_dir, language=lang)
