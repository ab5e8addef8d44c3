"""Joined audio: one recording from a group of clips, and training windows of at most one Whisper window."""

import numpy as np
import pytest

from speechtl import audio
from speechtl.data.joining import join_audio, pack_windows
from speechtl.data.manifest import Utterance

SR = 16000


def _clips(tmp_path, seconds, name="c"):
    utts = []
    for i, s in enumerate(seconds):
        path = tmp_path / "clips" / f"{name}{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        audio.write_audio(path, np.full(int(s * SR), 0.01 * (i + 1), np.float32), SR)
        utts.append(Utterance(id=f"{name}{i}", audio_filepath=str(path), text=f"frase {i}", duration=s,
                              speaker=f"s{i % 3}", lang="es"))
    return utts


def test_join_audio_puts_pauses_between_clips_and_keeps_their_texts(tmp_path):
    utts = _clips(tmp_path, [1.0, 0.5])
    joined = join_audio(utts, tmp_path / "j.wav", 0.25)
    samples = audio.load(joined.audio_filepath, SR)
    assert len(samples) == int(1.75 * SR) and joined.duration == 1.75
    assert np.all(samples[SR:SR + SR // 4] == 0) and abs(samples[-1] - 0.02) < 1e-3
    assert joined.text == "frase 0 frase 1" and joined.extra["joined_ids"] == ["c0", "c1"]
    assert joined.speaker == "mixed" and joined.lang == "es"
    with pytest.raises(ValueError, match="no utterances"):
        join_audio([], tmp_path / "k.wav", 0.25)


def test_pack_windows_covers_every_utterance_once_within_the_limit(tmp_path):
    rng = np.random.default_rng(0)
    utts = _clips(tmp_path, [round(float(s), 2) for s in rng.uniform(1.0, 6.0, 40)])
    windows = pack_windows(utts, tmp_path / "packed", max_s=20.0, pause_s=0.5, seed=3)
    ids = [i for w in windows for i in w.extra["joined_ids"]]
    assert sorted(ids) == sorted(u.id for u in utts)  # each exactly once
    assert all(w.duration <= 20.0 for w in windows)
    sizes = [len(w.extra["joined_ids"]) for w in windows]
    assert min(sizes) == 1 and max(sizes) >= 3  # single clips and several-clip windows both occur
    by_id = {u.id: u for u in utts}
    assert all(w.text == " ".join(by_id[i].text for i in w.extra["joined_ids"]) for w in windows)
    # seeded, and packing again leaves identical files untouched (their mtime keys the encoder cache)
    stamps = {w.audio_filepath: (tmp_path / w.audio_filepath).stat().st_mtime_ns for w in windows}
    again = pack_windows(utts, tmp_path / "packed", max_s=20.0, pause_s=0.5, seed=3)
    assert again == windows
    assert {w.audio_filepath: (tmp_path / w.audio_filepath).stat().st_mtime_ns for w in again} == stamps
    assert [w.extra["joined_ids"] for w in pack_windows(utts, tmp_path / "other", max_s=20.0, seed=4)] != \
        [w.extra["joined_ids"] for w in windows]


def test_pack_windows_refuses_what_it_cannot_pack(tmp_path):
    utts = _clips(tmp_path, [1.0, 2.0])
    with pytest.raises(ValueError, match="max_s"):
        pack_windows(utts, tmp_path / "p", max_s=31.0)
    undated = [utts[0], Utterance(id="x7", audio_filepath=utts[1].audio_filepath, text="t", duration=None)]
    with pytest.raises(ValueError, match="id=x7: field 'duration'"):
        pack_windows(undated, tmp_path / "p")
    long = _clips(tmp_path, [12.0], name="long")  # longer than max_s: a window of its own
    windows = pack_windows(long + utts, tmp_path / "q", max_s=10.0)
    assert ["long0"] in [w.extra["joined_ids"] for w in windows] and max(w.duration for w in windows) == 12.0


def test_speed_perturbation_changes_each_clips_length_and_keeps_the_limit(tmp_path):
    utts = _clips(tmp_path, [2.0, 3.0, 1.5, 2.5, 4.0, 2.0])
    plain = pack_windows(utts, tmp_path / "plain", max_s=28.0, seed=1)
    fast = pack_windows(utts, tmp_path / "fast", max_s=28.0, seed=1, speed=(1.2, 1.5))
    speeds = {i: f for w in fast for i, f in zip(w.extra["joined_ids"], w.extra["speeds"], strict=True)}
    assert sorted(speeds) == sorted(u.id for u in utts) and all(1.2 <= f <= 1.5 for f in speeds.values())
    assert sum(w.duration for w in fast) < sum(w.duration for w in plain)
    assert all("speeds" not in w.extra for w in plain)
    # one clip alone: its new length is its duration over its speed (resampled, not cut)
    alone = join_audio(utts[:1], tmp_path / "one.wav", 0.5, [1.25])
    assert abs(alone.duration - 2.0 / 1.25) < 1e-3
    long = _clips(tmp_path, [29.5], name="long")  # never slowed past one window
    assert pack_windows(long, tmp_path / "slow", speed=(0.8, 0.8))[0].duration <= 30.0
    with pytest.raises(ValueError, match="speed range"):
        pack_windows(utts, tmp_path / "bad", speed=(1.1, 0.9))
    with pytest.raises(ValueError, match="one speed in"):
        join_audio(utts[:2], tmp_path / "bad.wav", 0.5, [1.0])
