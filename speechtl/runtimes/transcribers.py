"""The runtimes an exported model runs on, behind the ``transcribe(audios, lang, ...)`` interface of evaluation.

- :class:`FasterWhisperTranscriber`: a CTranslate2 export on ``faster_whisper.WhisperModel`` (what Pipecat's
  ``WhisperSTTService`` loads), greedy, no VAD, no timestamps, no conditioning on previous text;
- :class:`PipelineTranscriber`: a transformers export through the plain ``automatic-speech-recognition``
  pipeline (``from_pretrained`` under the hood);
- :class:`OnnxCtcTranscriber`: an ONNX export of a CTC model on onnxruntime, decoded greedily.

:func:`runtime_transcriber` picks one for an export directory; :func:`torch_transcriber` is the PyTorch model
the export is checked against.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.models.ct2.whisper import pad_to_window
from speechtl.models.ctc.batches import CtcCollator
from speechtl.models.ctc.decode import greedy_decode
from speechtl.models.ctc.vocab import load_vocab
from speechtl.models.wav2vec2 import CtcASR, architecture, whisper_frames
from speechtl.models.whisper import WhisperASR, token_budget

ONNX_META = "speechtl_onnx.json"


class FasterWhisperTranscriber:
    """A CTranslate2 Whisper directory on faster-whisper (CPU; ``compute_type`` e.g. int8, float32)."""

    def __init__(self, model_dir: Path | str, *, compute_type: str = "int8", num_threads: int = 0,
                 pad: bool = True) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ImportError("the CTranslate2 runtime check needs faster-whisper: "
                              "pip install 'speechtl[serve]'") from exc
        self.name = f"faster-whisper ({compute_type}): {model_dir}"
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=num_threads)
        self.pad = pad  # see speechtl.models.ct2.whisper.pad_to_window; False: faster-whisper as a caller uses it

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:

        out = []
        for audio in audios:
            audio = pad_to_window(audio) if self.pad else np.asarray(audio, np.float32)
            segments, _ = self.model.transcribe(audio, language=lang, task="transcribe",
                                                beam_size=1, best_of=1, temperature=0.0, initial_prompt=prompt,
                                                condition_on_previous_text=False, without_timestamps=True,
                                                vad_filter=False)
            out.append("".join(s.text for s in segments).strip())
        return out


class PipelineTranscriber:
    """A transformers Whisper directory through ``pipeline("automatic-speech-recognition")``."""

    def __init__(self, model_dir: Path | str) -> None:
        from transformers import pipeline

        self.name = f"transformers pipeline: {model_dir}"
        self.pipe = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
        if self.pipe.tokenizer.pad_token_id is None:  # batching pads labels; Whisper pads with end-of-text
            self.pipe.tokenizer.pad_token_id = self.pipe.model.config.eos_token_id

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:
        if prompt:
            raise ValueError("PipelineTranscriber: prompts are not supported")

        out = []
        for lo in range(0, len(audios), batch_size):  # the same decoding limit per batch as speechtl's decoding
            chunk = [np.asarray(a, np.float32) for a in audios[lo:lo + batch_size]]
            budget = token_budget(max(len(a) for a in chunk) / 16000)
            results = self.pipe([{"raw": a, "sampling_rate": 16000} for a in chunk], batch_size=len(chunk),
                                generate_kwargs={"language": lang, "task": "transcribe", "max_new_tokens": budget})
            out += [r["text"].strip() for r in results]
        return out


class OnnxCtcTranscriber:
    """An ONNX CTC export (see :func:`speechtl.export.formats.export_onnx`) on onnxruntime, greedy decoding."""

    def __init__(self, model_dir: Path | str) -> None:
        import onnxruntime as ort


        model_dir = Path(model_dir)
        self.meta = json.loads((model_dir / ONNX_META).read_text(encoding="utf-8"))
        self.vocab = load_vocab(model_dir / "vocab.json", self.meta["lang"])
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        self.name = f"onnxruntime: {model_dir}"
        if self.meta["kind"] == "whisper-encoder":
            from transformers import WhisperFeatureExtractor

            self.features = WhisperFeatureExtractor.from_pretrained(model_dir)
        else:
            self.collator = CtcCollator(normalize=self.meta.get("normalize", True))

    def log_probs(self, audios: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """Log-probabilities (batch, frames, vocab) and the frames covering each clip."""
        if self.meta["kind"] == "whisper-encoder":
            feats = self.features(list(audios), sampling_rate=16000, return_tensors="np").input_features
            out = self.session.run(None, {"input_features": feats.astype(np.float32)})[0]
            return out, [whisper_frames(len(a), out.shape[1]) for a in audios]
        batch = self.collator.waveforms(audios)
        feeds = {"input_values": batch["input_values"].numpy()}
        if self.meta.get("attention_mask"):
            feeds["attention_mask"] = batch["attention_mask"].numpy()
        out, lengths = self.session.run(None, feeds)
        return out, [int(n) for n in lengths]

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:

        if prompt:
            raise ValueError("a CTC model takes no text prompt")
        out: list[str] = []
        for lo in range(0, len(audios), batch_size):
            log_probs, lengths = self.log_probs(audios[lo:lo + batch_size])
            out += [greedy_decode(lp, self.vocab.symbols, n) for lp, n in zip(log_probs, lengths)]
        return out


def torch_transcriber(model_dir: Path | str, lang: str) -> Any:
    """The PyTorch model of a transformers or speechtl CTC directory (what an export is checked against)."""

    if architecture(model_dir) == "ctc":
        return CtcASR.load(model_dir, lang=lang)
    return WhisperASR.load(model_dir)


def runtime_transcriber(export_dir: Path | str, fmt: str, *, lang: str, compute_type: str | None = None) -> Any:
    """What runs an export of format ``fmt`` ("hf", "ct2", "onnx")."""

    if fmt == "ct2":
        return FasterWhisperTranscriber(export_dir, compute_type=compute_type or "int8")
    if fmt == "onnx":
        return OnnxCtcTranscriber(export_dir)
    if architecture(export_dir) == "ctc":  # speechtl CTC directories load through CtcASR
        return torch_transcriber(export_dir, lang)
    return PipelineTranscriber(export_dir)
