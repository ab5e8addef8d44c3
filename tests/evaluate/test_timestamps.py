import pytest

from speechtl.data.manifest import Utterance
from speechtl.evaluate.scoring import scoring_normalizer
from speechtl.evaluate.timestamps import check_segments, summarize, timestamp_check, timestamp_line, utterance_starts
from speechtl.runtimes.transcript import Segment, Transcript


def joined(ids, text="x"):
    return Utterance(id="rec", audio_filepath="rec.wav", text=text, duration=10.0, extra={"joined_ids": ids})


def test_utterance_starts_add_durations_and_pauses():
    assert utterance_starts(joined(["a", "b", "c"]), {"a": 2.0, "b": 3.0, "c": 1.0}, 0.5) == [0.0, 2.5, 6.0]
    with pytest.raises(ValueError, match=r"id=rec: no duration for joined utterance\(s\) \['b'\]"):
        utterance_starts(joined(["a", "b"]), {"a": 2.0}, 0.5)
    with pytest.raises(ValueError, match="id=clip: field 'extra.joined_ids'"):
        utterance_starts(Utterance(id="clip", audio_filepath="c.wav", text="x"), {}, 0.5)


def test_check_segments_flags_each_way_of_being_wrong():
    truth = [0.0, 2.5, 6.0]
    good = check_segments([(0.0, 2.2), (2.6, 5.8), (6.0, 7.0)], 7.0, truth)
    assert good["sane"] and good["offsets_s"] == pytest.approx([0.0, 0.1, 0.0])
    assert not check_segments([(0.0, 2.2), (2.0, 1.0)], 7.0, truth)["inside"]  # end before start
    assert not check_segments([(0.0, 7.5)], 7.0, truth)["inside"]  # past the audio
    assert check_segments([(0.0, 7.02)], 7.0, truth)["inside"]  # one timestamp step of rounding
    assert not check_segments([(2.5, 3.0), (0.0, 2.0)], 7.0, truth)["ordered"]
    assert not check_segments([], 7.0, truth)["sane"]  # nothing transcribed: no timestamps to trust
    assert check_segments([(4.0, 5.0)], 7.0, truth)["offsets_s"] == pytest.approx([1.5])  # mid-sentence start


def test_summarize_and_timestamp_check_with_a_runtime():
    class Runtime:
        def transcript(self, samples, *, language):
            assert language == "es"
            segs = [Segment(id=i, seek=0, start=s, end=e, text="x", tokens=(), temperature=0.0, avg_logprob=0.0,
                            compression_ratio=1.0, no_speech_prob=0.0) for i, (s, e) in enumerate(samples)]
            return Transcript(text="Uno dos, cuatro.", language="es", duration_s=7.0, segments=tuple(segs))

    rec = joined(["a", "b", "c"], text="uno dos tres cuatro")
    clips = [Utterance(id=i, audio_filepath=f"{i}.wav", text="x", duration=d) for i, d in (("a", 2), ("b", 3), ("c", 1))]
    spans = {"rec.wav": [(0.0, 2.0), (4.5, 6.0)]}  # the second starts mid-sentence: 1.5 s before "c"
    out = timestamp_check(Runtime(), [rec], clips, lang="es", pause_s=0.5, load=spans.get,
                          normalizer=scoring_normalizer("es"))
    assert out["wer"] == 0.25 and out["num_ref_words"] == 4  # "tres" deleted; case and punctuation normalized
    assert out["per_recording"][0]["hypothesis"] == "Uno dos, cuatro."
    assert out["recordings"] == 1 and out["sane_recordings"] == 1 and out["segments"] == 2
    assert out["median_start_offset_s"] == pytest.approx(0.75) and out["starts_within_tolerance"] == 0.5
    assert summarize([])["median_start_offset_s"] is None


def test_timestamp_line_reads_the_summary():
    check = {**summarize([check_segments([(0.0, 2.0), (4.5, 6.0)], 7.0, [0.0, 2.5, 6.0])]), "recordings": 1}
    assert timestamp_line(check) == ("1 of 1 recordings sane, 2 segments, 50% of segment starts within 1 s of an "
                                     "utterance start (median 0.75 s)")
    assert timestamp_line(summarize([check_segments([], 7.0, [0.0])])) == "0 of 1 recordings sane, 0 segments"
    assert timestamp_line({**check, "wer": 0.125}).startswith("long-form WER 12.5%; 1 of 1 recordings sane")
