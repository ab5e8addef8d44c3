"""An ONNX export of a CTC model (see :func:`speechtl.export.formats.export_onnx`) on onnxruntime, decoded
greedily: audio features in, per-frame log-probabilities out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speechtl.models.ctc.batches import CtcCollator
from speechtl.models.ctc.decode import greedy_decode
from speechtl.models.ctc.vocab import load_vocab
from speechtl.models.wav2vec2 import whisper_frames

ONNX_META = "speechtl_onnx.json"


class OnnxCtc:
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
