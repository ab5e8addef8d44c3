"""Long recordings: utterances joined with pauses, decoded whole in windows of at most 30 s."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechtl.data.manifest import Utterance
from speechtl.evaluate.longform import LongForm, join_utterances


@pytest.fixture
def utts(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(30):  # 30 "utterances" of 4-7 s of noise bursts
        seconds = float(rng.uniform(4, 7))
        path = tmp_path / f"u{i:02d}.wav"
        sf.write(path, (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32), 16000)
        out.append(Utterance(id=f"u{i:02d}", audio_filepath=str(path), text=f"frase {i}", duration=seconds,
                             speaker="s1"))
    return out


def test_join_covers_every_utterance_once_in_recordings_of_the_asked_length(utts, tmp_path):
    recs = join_utterances(utts, tmp_path / "long", min_s=40, max_s=60, seed=1)
    ids = [i for r in recs for i in r.extra["joined_ids"]]
    assert sorted(ids) == [u.id for u in utts] and ids != [u.id for u in utts]  # all, once, shuffled
    for rec in recs:
        data, rate = sf.read(rec.audio_filepath)
        parts = rec.extra["joined_ids"]
        assert rate == 16000 and len(data) / rate == pytest.approx(rec.duration, abs=1e-3)
        assert rec.text == " ".join(f"frase {int(i[1:])}" for i in parts) and rec.speaker == "s1"
    assert all(r.duration >= 40 for r in recs[:-1]) and all(r.duration <= 60 + 7.7 for r in recs)
    again = join_utterances(utts, tmp_path / "again", min_s=40, max_s=60, seed=1)
    assert [r.extra["joined_ids"] for r in again] == [r.extra["joined_ids"] for r in recs]


class Windows:
    def __init__(self):
        self.lengths = []

    def transcribe(self, audios, lang, *, prompt=None, batch_size=8):
        self.lengths += [len(a) for a in audios]
        return [f"w{len(a) // 16000}" for a in audios]


def test_long_form_decodes_windows_of_at_most_30_s_and_joins_them(utts, tmp_path):
    recs = join_utterances(utts, tmp_path / "long", min_s=70, max_s=90, seed=2)
    audios = [sf.read(r.audio_filepath, dtype="float32")[0] for r in recs]
    inner = Windows()
    texts = LongForm(inner).transcribe(audios, "es")
    assert len(texts) == len(audios) and max(inner.lengths) <= 30 * 16000
    assert sum(inner.lengths) == sum(len(a) for a in audios)  # every sample in exactly one window
    assert all(len(t.split()) >= 3 for t in texts[:-1])  # 70+ s: at least three windows each
