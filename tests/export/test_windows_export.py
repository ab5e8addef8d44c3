"""A model that encodes windows sized to the clip keeps them in its CTranslate2 export and on faster-whisper."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("ctranslate2")
pytest.importorskip("faster_whisper")

from speechtl.export.card import card_text  # noqa: E402
from speechtl.export.formats import export_ct2  # noqa: E402
from speechtl.models.random_whisper import save_random_whisper  # noqa: E402
from speechtl.models.whisper import WhisperASR  # noqa: E402
from speechtl.runtimes import load_runtime  # noqa: E402
from speechtl.runtimes.faster_whisper import WindowTurns  # noqa: E402


@pytest.fixture(scope="module")
def ct2_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("windows")
    asr = WhisperASR.load(save_random_whisper(root / "plain", seed=0))
    asr.window_step_s = 10.0
    asr.save(root / "hf")
    return export_ct2(root / "hf", root / "ct2", quantization="float32")


def test_the_ct2_export_carries_the_window_and_the_runtime_uses_it(ct2_dir, monkeypatch):
    assert json.loads((ct2_dir / "config.json").read_text())["speechtl_window_step_s"] == 10.0
    runtime = load_runtime(ct2_dir, lang="es")
    assert runtime.window_step_s == 10.0
    seen = []
    real = runtime.model.transcribe

    def spy(audio, **kwargs):
        seen.append((len(audio), kwargs.get("chunk_length")))
        return real(audio, **kwargs)

    monkeypatch.setattr(runtime.model, "transcribe", spy)
    clip, long = np.zeros(3 * 16000, np.float32), np.zeros(45 * 16000, np.float32)
    runtime.transcribe([clip], "es")
    runtime.transcript(np.zeros(12 * 16000, np.float32), language="en")  # the tiny model: English-only
    runtime.transcript(long, language="en")
    assert seen == [(10 * 16000, 10), (20 * 16000, 20), (45 * 16000, 30)]  # padded to the window; long: as it is
    runtime.pad = False  # faster-whisper as a caller uses it: no padding, its own 30-s windows
    runtime.transcribe([clip], "es")
    assert seen[-1] == (3 * 16000, None)


def test_language_is_detected_on_a_30_s_window(ct2_dir, monkeypatch):
    runtime = load_runtime(ct2_dir)
    runtime.multilingual = True  # the tiny model is English-only: faster-whisper would refuse to detect
    seen = []
    real_transcribe = runtime.model.transcribe
    monkeypatch.setattr(runtime.model, "detect_language",
                        lambda features: seen.append(features.shape[-1]) or ("en", 1.0, []))
    monkeypatch.setattr(runtime.model, "transcribe",
                        lambda audio, **kw: seen.append((kw["language"], kw["chunk_length"])) or real_transcribe(
                            audio, **kw))
    out = runtime.transcript(np.zeros(3 * 16000, np.float32))
    assert seen[0] >= 3000 and seen[1] == (out.language, 10)  # detected on 30 s, then decoded in its window


def test_faster_whisper_gets_the_features_the_model_was_evaluated_on():
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperFeatureExtractor

    from speechtl.models.ct2.whisper import pad_to_window

    audio = np.random.default_rng(0).normal(0, 0.1, 4 * 16000).astype(np.float32)
    reference = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000).input_features[0][:, :1000]
    served = FeatureExtractor(feature_size=80)(pad_to_window(audio, 10.0), chunk_length=10)[:, :1000]
    assert served.shape == reference.shape and np.abs(served - reference).max() < 1e-3


def test_calls_with_another_window_take_turns():
    turns, log, lock = WindowTurns(), [], threading.Lock()

    def call(window, hold_s):
        with turns.hold(window):
            with lock:
                log.append(("in", window))
            time.sleep(hold_s)
            with lock:
                log.append(("out", window))

    first = [threading.Thread(target=call, args=(10.0, 0.3)) for _ in range(2)]
    for t in first:
        t.start()
    time.sleep(0.1)
    other = threading.Thread(target=call, args=(20.0, 0.0))
    other.start()
    for t in [*first, other]:
        t.join(5)
    assert log[:2] == [("in", 10.0), ("in", 10.0)]  # one window runs together
    assert log.index(("in", 20.0)) > max(i for i, e in enumerate(log) if e == ("out", 10.0))  # another waits


def test_the_model_card_says_how_to_decode_in_windows():
    text = card_text("ct2", payload=None, parity=None, quantization="int8", lang="es", window_step_s=10.0)
    assert "chunk_length=round(window)" in text and "window_seconds(len(audio) / 16000, 10)" in text
    assert "chunk_length" not in card_text("ct2", payload=None, parity=None, quantization="int8", lang="es")
