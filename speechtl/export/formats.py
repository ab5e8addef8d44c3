"""Export an adapted model: transformers (hf), CTranslate2 (ct2, for faster-whisper) and ONNX (onnx, CTC models).

Every format is written to a temporary folder beside its destination and swapped in when complete.
:func:`export` (``speechtl export``, and the end of ``speechtl adapt``) adds the parity check and the model
card (:mod:`speechtl.export.parity`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.fsio import staged_dir
from speechtl.models.wav2vec2 import WHISPER_KIND, CtcASR, architecture
from speechtl.runtimes.onnx import ONNX_META

log = logging.getLogger(__name__)

HF_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")


def export_hf(model_dir: Path | str, out: Path | str) -> Path:
    """Copy a transformers model directory (weights, config, processor, generation config)."""
    model_dir, out = Path(model_dir), Path(out)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"export: {model_dir} holds no config.json; not a transformers model directory")
    with staged_dir(out) as tmp:
        copied = 0
        for pattern in HF_FILES:
            for path in model_dir.glob(pattern):
                shutil.copy2(path, tmp / path.name)
                copied += 1
    log.info("export: transformers model (%d files) -> %s", copied, out)
    return out


def export_ct2(hf_dir: Path | str, out: Path | str, quantization: str = "float16") -> Path:
    """Convert a transformers Whisper directory with CTranslate2's own converter."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise ImportError("CTranslate2 export needs ctranslate2: pip install 'speechtl[bundled]'") from exc
    hf_dir, out = Path(hf_dir), Path(out)
    keep = [f for f in ("tokenizer.json", "preprocessor_config.json") if (hf_dir / f).is_file()]
    with staged_dir(out) as tmp:
        converter = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=keep)
        converter.convert(str(tmp), quantization=quantization, force=True)
        if "preprocessor_config.json" not in keep:  # faster-whisper reads the mel settings (e.g. 128 bins) here
            from transformers import WhisperFeatureExtractor

            WhisperFeatureExtractor.from_pretrained(hf_dir).to_json_file(str(tmp / "preprocessor_config.json"))
    log.info("export: CTranslate2 model (%s) -> %s", quantization, out)
    return out


def export_onnx(model_dir: Path | str, out: Path | str, *, lang: str, opset: int = 17) -> Path:
    """A speechtl CTC model as ``model.onnx`` (audio in, per-frame log-probabilities out) + its vocabulary.

    Whisper-encoder kind: ``input_features`` (batch, mels, 3000) -> ``log_probs`` (batch, 1500, vocab).
    wav2vec2 family: ``input_values`` (batch, samples) [+ ``attention_mask``] -> ``log_probs`` (batch,
    frames, vocab) and ``num_frames`` (batch). Decoding (greedy or the LM beam search) stays outside.
    Whisper seq2seq models are exported for CPU serving as CTranslate2 (``ct2``) instead.
    """

    import torch

    model_dir, out = Path(model_dir), Path(out)
    if importlib.util.find_spec("onnx") is None:
        raise RuntimeError("export onnx: the onnx package is missing; install speechtl[onnx] "
                           "(or leave onnx out of export.formats)")
    if architecture(model_dir) != "ctc":
        raise ValueError(f"export onnx: {model_dir} is a Whisper (seq2seq) model; ONNX export covers CTC models, "
                         "use --format ct2 for Whisper")
    asr = CtcASR.load(model_dir, lang=lang)
    net = asr.model.eval()
    whisper = asr.kind == WHISPER_KIND

    class LogProbs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
            if whisper:
                return torch.log_softmax(self.net.lm_head(asr.encode(x)), dim=-1)
            logits = self.net(x, attention_mask=mask).logits
            lengths = mask.sum(-1) if mask is not None else torch.full_like(x[:, 0], x.shape[1], dtype=torch.long)
            return torch.log_softmax(logits, dim=-1), self.net._get_feat_extract_output_lengths(lengths)

    if whisper:
        args: tuple = (torch.zeros(1, net.config.num_mel_bins, 2 * net.config.max_source_positions),)
        names, outputs = ["input_features"], ["log_probs"]
        axes = {"input_features": {0: "batch"}, "log_probs": {0: "batch"}}
    else:
        batch = asr.features([np.zeros(16000, np.float32)])
        args = (batch["input_values"], batch.get("attention_mask"))
        names = ["input_values"] + (["attention_mask"] if "attention_mask" in batch else [])
        outputs = ["log_probs", "num_frames"]
        axes = {n: {0: "batch", 1: "samples"} for n in names} | {"log_probs": {0: "batch", 1: "frames"},
                                                                 "num_frames": {0: "batch"}}
    with staged_dir(out) as tmp:
        with torch.no_grad():
            torch.onnx.export(LogProbs().eval(), args, str(tmp / "model.onnx"), input_names=names,
                              output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False)
        asr.vocab.save(tmp / "vocab.json")
        asr.feature_extractor.save_pretrained(tmp)
        meta = {"kind": asr.kind, "lang": lang, "inputs": names, "outputs": outputs,
                "attention_mask": "attention_mask" in names, "normalize": asr.collator.normalize,
                "source": str(model_dir)}
        (tmp / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    log.info("export: ONNX CTC model (%s) -> %s", asr.kind, out)
    return out
