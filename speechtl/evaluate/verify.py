"""Check transcripts matched to audio by id: does the recording say that text?

A corpus whose texts come from elsewhere (the Colombian Asterisk prompts,
transcribed by the core prompt list's ids) holds recordings that say other
words than their id's text. The unadapted model's transcript is the
witness: an utterance whose character error rate against its reference is
above ``max_cer`` is quarantined as ``transcript_mismatch``, with both texts
and the CER, and never scored. On the Colombian prompts a paraphrase (the
other script's "presione uno" for "marque uno") mostly scores above CER 0.35
and an accent or a misheard word below. The check errs one way: it also drops
some recordings the baseline merely heard badly, which leaves a set easier for
the baseline, never for the adapted model. An utterance whose words its id
dictates (``extra["wording_fixed_by_id"]``: a number, a month) is kept whatever
the witness heard: a disagreement there is a recognition error, not another
text.

:class:`ReplayTranscriber` hands the same hypotheses back by utterance id, so
the baseline evaluation of the kept utterances costs no second decode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from speechtl.data.manifest import QuarantineRecord, Utterance


def verify_transcripts(utts: Sequence[Utterance], rows: Iterable[dict[str, Any]], max_cer: float,
                       *, witness: str) -> tuple[list[Utterance], list[QuarantineRecord]]:
    """Split ``utts`` by the CER of their hypothesis rows (``evaluate_manifest``'s hypotheses.jsonl)."""
    by_id = {row["id"]: row for row in rows}
    kept, rejected = [], []
    for utt in utts:
        row = by_id.get(utt.id)
        if row is None:
            raise KeyError(f"verify_transcripts: utterance {utt.id} ({utt.audio_filepath}) has no hypothesis row")
        if row["cer"] <= max_cer or utt.extra.get("wording_fixed_by_id"):
            kept.append(utt)
            continue
        rejected.append(QuarantineRecord(
            id=utt.id, field="text", reason="transcript_mismatch", source=utt.audio_filepath, text=utt.text,
            detail=f"{witness} heard {row['hypothesis']!r}: CER {row['cer']:.2f} against the text, over "
                   f"{max_cer:.2f}; the recording does not say its id's text",
        ))  # fmt: skip
    return kept, rejected


class ReplayTranscriber:
    """Returns stored hypotheses by utterance id (the decode was done once, for the verification)."""

    def __init__(self, rows: Iterable[dict[str, Any]], name: str) -> None:
        self.hyps = {row["id"]: row["hypothesis"] for row in rows}
        self.name = name

    def transcribe_utterances(self, utts: Sequence[Utterance], lang: str, *, prompt: str | None = None,
                              batch_size: int = 8) -> list[str]:
        if prompt is not None:
            raise ValueError("ReplayTranscriber: the stored hypotheses were decoded without a prompt")
        missing = [u.id for u in utts if u.id not in self.hyps]
        if missing:
            raise KeyError(f"ReplayTranscriber: no stored hypothesis for {missing[:3]}")
        return [self.hyps[u.id] for u in utts]
