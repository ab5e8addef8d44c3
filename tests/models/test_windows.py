"""Encoder windows sized to the clip: the rule, the grouping, and a shorter window through the encoder."""

import numpy as np
import pytest

from speechtl.models.windows import window_groups, window_positions, window_seconds


def test_a_clip_gets_its_length_rounded_up_to_the_step():
    assert [window_seconds(d, 10) for d in (0.0, 3.2, 10.0, 10.01, 19.9, 29.5, 30.0, 45.0)] == \
        [10, 10, 10, 20, 20, 30, 30, 30]
    assert window_seconds(3.2, None) == window_seconds(None, 10) == 30  # Whisper's rule; unknown length
    assert window_positions(3.2, 10) == 500 and window_positions(12, 10, positions=30) == 20
    assert window_positions(3.2, None) == 1500
    with pytest.raises(ValueError, match="window_step_s=40"):
        window_seconds(3.0, 40)


def test_groups_keep_one_window_per_batch_and_every_clip_once():
    durations = [3.0, 12.0, 4.0, 5.0, 25.0, 9.0, 11.0]
    batches = window_groups(durations, 10, 2)
    assert batches == [[0, 2], [3, 5], [1, 6], [4]]
    assert window_groups(durations, None, 3) == [[0, 1, 2], [3, 4, 5], [6]]  # one window: plain batches


def test_whisper_encodes_a_short_window_like_the_first_positions_of_its_embeddings(tmp_path):
    torch = pytest.importorskip("torch")
    from speechtl.models.random_whisper import save_random_whisper
    from speechtl.models.whisper import WhisperASR

    asr = WhisperASR.load(save_random_whisper(tmp_path / "tiny", seed=0))
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    assert asr.features([audio]).shape[-1] == 3000
    asr.window_step_s = 10
    feats = asr.features([audio])
    assert feats.shape[-1] == 1000 and asr.encode(feats).shape[1] == 500
    with pytest.raises(ValueError, match="multiple of 2"):
        asr.encode(feats[..., :999])
    asr.save(tmp_path / "saved")  # a training setting: the saved model is decoded on 30-s windows
    assert WhisperASR.load(tmp_path / "saved").window_step_s is None
    assert len(asr.transcribe([audio, np.zeros(16000 * 15, np.float32), audio], "es", max_new_tokens=3)) == 3
    with torch.no_grad():
        assert not torch.equal(asr.encode(feats)[:, :10], asr.encode(asr.features([audio, np.zeros(16000 * 15,
                                                                                     np.float32)]))[:1, :10])
