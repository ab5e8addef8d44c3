"""speechtl export: each format written and reloaded by its runtime, the parity check, the model card."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("ctranslate2")

from tone_corpus import tone_rows  # noqa: E402

from speechtl.data.manifest import write_jsonl  # noqa: E402
from speechtl.export.card import card_text  # noqa: E402
from speechtl.export.parity import ExportParityError, export, parity  # noqa: E402
from speechtl.models.random_whisper import save_random_whisper  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    write_jsonl(root / "test.jsonl", tone_rows(root, ["hola", "buenos días", "gracias"]))
    return {"model": save_random_whisper(root / "tiny", seed=0), "manifest": root / "test.jsonl", "root": root}


def test_hf_export_loads_with_the_transformers_pipeline(tiny, tmp_path):
    from transformers import WhisperForConditionalGeneration, pipeline

    out = tmp_path / "hf"
    result = export(tiny["model"], "hf", out=out, lang="es", manifest=tiny["manifest"], margin_points=1e6)
    assert WhisperForConditionalGeneration.from_pretrained(out).config.d_model == 64
    asr = pipeline("automatic-speech-recognition", model=str(out))
    assert isinstance(asr(np.zeros(16000, np.float32))["text"], str)
    saved = json.loads((out / "parity.json").read_text())
    assert saved == result and saved["num_utts"] == 3 and saved["torch_rtf"] > 0 and saved["export_rtf"] > 0
    assert (out / "parity" / "hypotheses.jsonl").is_file() and (out / "README.md").is_file()


def test_ct2_export_runs_on_faster_whisper(tiny, tmp_path):
    faster_whisper = pytest.importorskip("faster_whisper")
    out = tmp_path / "ct2"
    result = export(tiny["model"], "ct2", out=out, lang="es", quantization="float32", manifest=tiny["manifest"],
                    margin_points=1e6)
    for name in ("model.bin", "tokenizer.json", "preprocessor_config.json", "README.md", "parity.json"):
        assert (out / name).is_file(), name
    assert result["format"] == "ct2" and result["compute_type"] == "int8"
    assert 0 <= result["unpadded_wer"] and (out / "parity" / "unpadded" / "hypotheses.jsonl").is_file()
    model = faster_whisper.WhisperModel(str(out), device="cpu", compute_type="int8")
    segments, info = model.transcribe(np.zeros(16000, np.float32), language="es", beam_size=1)
    assert isinstance("".join(s.text for s in segments), str) and info.duration == pytest.approx(1.0)
    # the same files checked again (a re-run's export): every transcript is read back, the figures are the same
    # and no real-time factor is claimed; an export of other bytes is decoded
    again = export(tiny["model"], "ct2", out=tmp_path / "again", lang="es", quantization="float32",
                   manifest=tiny["manifest"], margin_points=1e6)
    assert result["export_rtf"] > 0 and again["export_rtf"] is None
    assert (again["export_wer"], again["unpadded_wer"]) == (result["export_wer"], result["unpadded_wer"])
    other = export(tiny["model"], "ct2", out=tmp_path / "int8", lang="es", quantization="int8",
                   manifest=tiny["manifest"], margin_points=1e6)
    assert other["export_rtf"] > 0


def test_an_export_worse_than_the_margin_fails_loudly(tiny, tmp_path):
    out = tmp_path / "hf"
    export(tiny["model"], "hf", out=out, lang="es")  # no manifest: no check
    perfect = {"wer": 0.0, "rtf": 0.1, "model": "reference"}  # the random model cannot match a perfect reference
    with pytest.raises(ExportParityError, match="points from the PyTorch model"):
        parity(tiny["model"], out, "hf", tiny["manifest"], lang="es", compute_type=None, reference=perfect,
               margin_points=1.0)
    saved = json.loads((out / "parity.json").read_text())
    assert saved["passed"] is False and saved["diff_points"] > 1.0


def test_an_export_better_than_the_margin_fails_too(tiny, tmp_path):
    """A PyTorch figure far worse than the export's (a corrupt cache read as the model) is no pass either."""
    out = tmp_path / "hf"
    export(tiny["model"], "hf", out=out, lang="es")  # no manifest: no check
    broken = {"wer": 50.0, "rtf": 0.1, "model": "reference"}  # 5000 %: no decode of 3 short clips gets there
    with pytest.raises(ExportParityError, match="points from the PyTorch model"):
        parity(tiny["model"], out, "hf", tiny["manifest"], lang="es", compute_type=None, reference=broken,
               margin_points=1.0)
    saved = json.loads((out / "parity.json").read_text())
    assert saved["passed"] is False and saved["diff_points"] < -1.0


def test_a_parity_check_decodes_both_sides_with_the_runs_beam_width(tiny, tmp_path, monkeypatch):
    from speechtl.models.whisper import WhisperASR

    out = tmp_path / "hf"
    export(tiny["model"], "hf", out=out, lang="es")  # no manifest: no check
    widths = []
    real = WhisperASR.transcribe

    def spy(self, *args, **kwargs):
        widths.append(kwargs.get("num_beams") or self.num_beams)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WhisperASR, "transcribe", spy)
    parity(tiny["model"], out, "hf", tiny["manifest"], lang="es", compute_type=None, reference=None,
           margin_points=1e6, num_beams=2)
    assert widths and set(widths) == {2}  # the export and the PyTorch reference alike
    widths.clear()
    parity(tiny["model"], out, "hf", tiny["manifest"], lang="es", compute_type=None, reference=None,
           margin_points=1e6)
    assert widths and set(widths) == {1}


def test_an_export_removes_the_staged_folder_of_a_killed_export(tiny, tmp_path):
    stale = tmp_path / ".hf.k1ll3d00.tmp"  # as staged_dir names it; its writer killed, so no lock held
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half the weights")
    export(tiny["model"], "hf", out=tmp_path / "hf", lang="es")
    assert not stale.exists() and (tmp_path / "hf" / "config.json").is_file()


@pytest.mark.parametrize("fmt", ["hf", "ct2"])
def test_an_export_honours_the_umask(tiny, tmp_path, fmt):
    """A service running as another user can load it: no file readable by its owner only (issue 16)."""
    previous = os.umask(0o022)
    try:
        export(tiny["model"], fmt, out=tmp_path / fmt, lang="es", quantization="float32")
    finally:
        os.umask(previous)
    private = [p.name for p in [tmp_path / fmt, *(tmp_path / fmt).rglob("*")] if not p.stat().st_mode & 0o044]
    assert not private and (tmp_path / fmt / "README.md").is_file(), private


def test_onnx_refuses_a_whisper_seq2seq_model(tiny, tmp_path):
    with pytest.raises(ValueError, match="use --format ct2"):
        export(tiny["model"], "onnx", out=tmp_path / "onnx", lang="es")


def test_model_card_has_hub_metadata_and_results():
    payload = {
        "recipe": {"name": "es-medical", "data": {"sources": [{"name": "medical", "kind": "synth", "engine": "kokoro",
                                                              "num_voices": 12, "use": ["train", "test"]}]}},
        "model": {"name": "whisper-base", "source": "bundled"},
        "normalizer": {"name": "speechtl-text-es-v1"}, "primary": "medical/test", "data": {},
        "sets": {"medical/test": {"source": "medical", "kind": "synth", "engine": "kokoro", "split": "test"}},
        "train": {"route": "seq2seq", "strategy": "top-k", "steps": 100, "trainable_params": 5, "total_params": 9},
        "evaluations": {
            "baseline": {"medical/test": {"wer": 0.206, "cer": 0.1, "num_utts": 75, "wer_ci95": [0.18, 0.23]}},
            "adapted": {"medical/test": {"wer": 0.088, "cer": 0.04, "num_utts": 75, "wer_ci95": [0.07, 0.1]}}},
    }
    check = {"passed": True, "compute_type": "int8", "manifest": "test.jsonl", "num_utts": 75, "export_wer": 0.09,
             "torch_wer": 0.088, "diff_points": 0.2, "margin_points": 1.0}
    text = card_text("ct2", payload=payload, parity=check, quantization="float16", lang="es")
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "ctranslate2" and front["language"] == ["es"]
    result = front["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "wer", "value": 8.8, "name": "WER"}
    assert "synthetic speech" in result["dataset"]["name"]
    assert "| medical/test (primary; synthetic speech: kokoro) | adapted | 75 | 8.8% |" in text
    assert "WER 9.0% exported vs 8.8% PyTorch (+0.20 points" in text and "faster_whisper" in text
    assert "unpadded" not in text
    check |= {"unpadded_wer": 0.11, "unpadded_diff_points": 2.2}
    text = card_text("ct2", payload=payload, parity=check, quantization="float16", lang="es")
    assert "on unpadded audio (faster-whisper called as-is) WER is 11.0% (+2.20 points)" in text


def test_padding_gives_faster_whisper_the_reference_log_mel():
    """Whisper's reference front end pads audio with silence; faster-whisper pads the log-mel with zeros."""
    pytest.importorskip("faster_whisper")
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperFeatureExtractor

    from speechtl.models.ct2.whisper import WINDOW_SAMPLES, pad_to_window

    audio = np.random.default_rng(0).normal(0, 0.1, 3 * 16000).astype(np.float32)
    padded = pad_to_window(audio)
    assert len(padded) == WINDOW_SAMPLES and np.array_equal(padded[:len(audio)], audio)
    assert len(pad_to_window(np.zeros(WINDOW_SAMPLES + 1))) == WINDOW_SAMPLES + 1  # long audio: as it is
    assert len(pad_to_window([])) == 0
    reference = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000).input_features[0]
    fw = FeatureExtractor(feature_size=80)
    ours = fw(padded)[:, :3000]
    as_is = np.pad(fw(audio)[:, :-1], ((0, 0), (0, 3000 - 300)))  # the window faster-whisper builds unpadded
    assert np.abs(ours - reference).max() < 1e-3
    assert np.abs(as_is[:, 400:] - reference[:, 400:]).min() > 0.1  # zeros where the log-mel of silence belongs
