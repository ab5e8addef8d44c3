"""Are a model's segment timestamps sane? Checked on joined recordings, whose utterance boundaries are known.

A recording made by :func:`speechtl.evaluate.longform.join_utterances` lists its
utterances (``extra["joined_ids"]``) and was written with a fixed pause between
them, so each utterance's start is known to the sample. :func:`check_segments`
scores one transcript's segments against those starts: every segment inside
the audio with ``start <= end``, starts in order, and each segment start's
distance to the nearest true utterance start (a segment that starts in the
middle of a sentence is off by seconds). Whisper's long-form decoding moves
its window by the last timestamp it predicts, so a model that lost timestamp
prediction shows here first. The same decode is scored (WER of each whole
recording against its joined text): long-form WER on the path users take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from speechtl.data.manifest import Utterance
from speechtl.evaluate.scoring import score
from speechtl.text.normalize import Normalizer

SLACK_S = 0.02  # one timestamp step: an end this far past the audio is rounding, not an error


def utterance_starts(recording: Utterance, durations: Mapping[str, float], pause_s: float) -> list[float]:
    """Where each utterance of a joined ``recording`` starts, in seconds (``durations`` by utterance id)."""
    ids = recording.extra.get("joined_ids")
    if not ids:
        raise ValueError(f"id={recording.id}: field 'extra.joined_ids' is missing: not a joined recording")
    missing = [i for i in ids if durations.get(i) is None]
    if missing:
        raise ValueError(f"id={recording.id}: no duration for joined utterance(s) {missing[:5]}")
    starts, t = [], 0.0
    for utt_id in ids:
        starts.append(t)
        t += float(durations[utt_id]) + pause_s
    return starts


def check_segments(spans: Sequence[tuple[float, float]], duration_s: float, true_starts: Sequence[float],
                   ) -> dict[str, Any]:
    """One transcript's segment ``spans`` (start, end) against its audio: ``sane`` (inside the audio, each
    ``start <= end``, starts in order, at least one segment) and each segment start's distance in seconds
    to the nearest true utterance start (``offsets_s``)."""
    starts = [s for s, _ in spans]
    inside = all(0.0 <= s <= e <= duration_s + SLACK_S for s, e in spans)
    ordered = all(a <= b for a, b in zip(starts, starts[1:], strict=False))
    truth = np.asarray(sorted(true_starts), dtype=float)
    offsets = [float(np.abs(truth - s).min()) for s in starts] if len(truth) else []
    return {"segments": len(spans), "inside": inside, "ordered": ordered,
            "sane": bool(spans) and inside and ordered, "offsets_s": offsets}


def summarize(checks: Sequence[Mapping[str, Any]], *, tolerance_s: float = 1.0) -> dict[str, Any]:
    """Totals over recordings: how many are sane, and the segment starts' distance to an utterance start."""
    offsets = [o for c in checks for o in c["offsets_s"]]
    return {
        "recordings": len(checks),
        "sane_recordings": sum(bool(c["sane"]) for c in checks),
        "segments": sum(int(c["segments"]) for c in checks),
        "median_start_offset_s": float(np.median(offsets)) if offsets else None,
        "starts_within_tolerance": (sum(o <= tolerance_s for o in offsets) / len(offsets)) if offsets else None,
        "tolerance_s": tolerance_s,
    }


def timestamp_check(transcriber: Any, recordings: Sequence[Utterance], utterances: Sequence[Utterance], *,
                    lang: str, pause_s: float, load: Any, normalizer: Normalizer,
                    tolerance_s: float = 1.0) -> dict[str, Any]:
    """Decode each joined recording with ``transcriber.transcript`` (a runtime that returns segments), check
    its timestamps and score its text; ``utterances`` are the clips the recordings were joined from.
    ``wer`` pools the recordings' errors over their reference words (``normalizer`` on both sides)."""
    durations = {u.id: u.duration for u in utterances}
    checks, hyps = [], []
    for rec in recordings:
        samples = load(rec.audio_filepath)
        transcript = transcriber.transcript(samples, language=lang)
        spans = [(s.start, s.end) for s in transcript.segments]
        check = check_segments(spans, transcript.duration_s, utterance_starts(rec, durations, pause_s))
        checks.append({"id": rec.id, **check, "hypothesis": transcript.text})
        hyps.append(transcript.text)
    scored = score([r.text for r in recordings], hyps, normalizer, ids=[r.id for r in recordings])
    return {**summarize(checks, tolerance_s=tolerance_s), "wer": scored.wer, "num_ref_words": scored.num_ref_words,
            "per_recording": checks}


def timestamp_line(check: Mapping[str, Any]) -> str:
    """One line for a log or a report: long-form WER, sane recordings, segments and how close their starts are."""
    line = "" if check.get("wer") is None else f"long-form WER {check['wer']:.1%}; "
    line += f"{check['sane_recordings']} of {check['recordings']} recordings sane, {check['segments']} segments"
    if check["segments"]:
        line += (f", {check['starts_within_tolerance']:.0%} of segment starts within {check['tolerance_s']:g} s of an "
                 f"utterance start (median {check['median_start_offset_s']:.2f} s)")
    return line
