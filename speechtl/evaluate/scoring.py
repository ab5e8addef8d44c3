"""Score transcripts: WER/CER, S/D/I, per speaker, per domain term, bootstrap confidence intervals.

Pure functions over strings (:func:`score`, :func:`term_recall`; the
bootstrap intervals :func:`bootstrap_ci` and :func:`paired_bootstrap` come from
:mod:`speechtl.evaluate.significance`); :mod:`speechtl.evaluate.decode` decodes manifests and
writes the result files around them.

Rules that the numbers depend on:

* Rates are fractions (0.25 = 25 %), pooled over the corpus: WER is
  (S + D + I) / number of reference words, never a mean of per-utterance WERs.
  It equals ``jiwer.wer`` on the same normalized strings. CER is the same on
  characters, spaces included (jiwer's default).
* References and hypotheses go through the same :class:`~speechtl.text.normalize.Normalizer`.
  The normalizer's ``name`` and ``settings`` are written into every result,
  because two WERs are comparable only when scored with the same text rules.
* A hypothesis the normalizer rejects (empty, only ``[música]``/``(risas)``...)
  scores as the empty string: every reference word of it is a deletion.
* A reference that normalizes to nothing is an error naming the utterance:
  data prep should have quarantined it, and silently dropping it would make
  the test set differ between two runs.
* ``raw`` holds the same measures on the strings as given (jiwer's default
  whitespace handling only), to show how much the normalization matters.

The default scoring normalizer (:func:`scoring_normalizer`) strips accents
(``á`` -> ``a``, ``ü`` -> ``u``) but keeps letters of their own such as Spanish
``ñ``: recognizers are inconsistent about accents (Whisper writes "esta" and
"está" for the same audio), and references from real corpora often lack them
(IVR prompt lists, upper-case transcripts), so counting accents would measure
the orthography of the data rather than what was recognized. It also skips the
alphabet check: a hypothesis may hold any character (a hallucination in the
wrong script is an error to count, not an input to reject).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jiwer

from speechtl.text.normalize import Normalizer, TextConfig, TextRejected, get_normalizer

log = logging.getLogger(__name__)

UNKNOWN_SPEAKER = "unknown"  # speaker key of utterances without one


class EvaluationError(ValueError):
    """Input that cannot be scored; the message names the utterance id and the field."""


def scoring_normalizer(lang: str) -> Normalizer:
    """The documented default normalizer for scoring (see the module docstring):
    the training-label rules plus ``strip_accents=True``, without the alphabet check."""
    return get_normalizer(lang, strip_accents=True, check_alphabet=False)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Counts:
    """Edit counts of one alignment (words or characters)."""

    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def num_ref(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """(S + D + I) / reference length; 0 for an empty reference with no insertions, else inf."""
        if self.num_ref == 0:
            return 0.0 if self.insertions == 0 else float("inf")
        return self.errors / self.num_ref

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.hits + other.hits, self.substitutions + other.substitutions,
                      self.deletions + other.deletions, self.insertions + other.insertions)


@dataclass(frozen=True)
class AlignOp:
    """One run of the word alignment: ``op`` is "equal", "substitute", "delete" or "insert"."""

    op: str
    ref: tuple[str, ...]  # reference words of the run (empty for an insertion)
    hyp: tuple[str, ...]  # hypothesis words of the run (empty for a deletion)

    def to_json(self) -> list[str]:
        return [self.op, " ".join(self.ref), " ".join(self.hyp)]


@dataclass(frozen=True)
class UttScore:
    """The score of one utterance."""

    id: str
    speaker: str  # UNKNOWN_SPEAKER when the utterance has none
    reference: str  # normalized reference
    hypothesis: str  # normalized hypothesis ("" when rejected)
    hypothesis_rejected: str | None  # TextRejected reason of the hypothesis, None when accepted
    words: Counts
    chars: Counts
    ops: tuple[AlignOp, ...]  # the word alignment, for error listings

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate


def _summary(words: Counts, chars: Counts, num_utts: int) -> dict[str, Any]:
    return {
        "wer": words.rate, "cer": chars.rate, "num_utts": num_utts, "num_ref_words": words.num_ref,
        "num_ref_chars": chars.num_ref, "hits": words.hits, "substitutions": words.substitutions,
        "deletions": words.deletions, "insertions": words.insertions,
    }


def _per_speaker(utterances: Iterable[UttScore]) -> dict[str, dict[str, Any]]:
    """Pooled WER/CER and counts per speaker, speakers sorted by name."""
    groups: dict[str, list[UttScore]] = {}
    for utt in utterances:
        groups.setdefault(utt.speaker, []).append(utt)
    return {spk: _summary(sum((u.words for u in utts), Counts()), sum((u.chars for u in utts), Counts()),
                          len(utts)) for spk, utts in sorted(groups.items())}


@dataclass(frozen=True)
class Scores:
    """Corpus-level scores on normalized text (rates are pooled fractions), plus ``raw``."""

    wer: float
    cer: float
    num_utts: int
    num_ref_words: int
    num_ref_chars: int
    hits: int  # word counts from here on
    substitutions: int
    deletions: int
    insertions: int
    raw: dict[str, Any]  # wer, cer, hits, substitutions, deletions, insertions on the raw strings
    per_speaker: dict[str, dict[str, Any]]  # speaker -> the fields above, pooled over its utterances
    rejected_hypotheses: dict[str, int]  # TextRejected reason -> number of hypotheses scored as empty
    utterances: tuple[UttScore, ...] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The corpus summary (no per-utterance rows)."""
        return {k: v for k, v in asdict(self).items() if k != "utterances"}


# ------------------------------------------------------------------ scoring


def _ids(ids: Sequence[str] | None, n: int, what: str) -> list[str]:
    if ids is None:
        return [f"#{i}" for i in range(n)]
    if len(ids) != n:
        raise EvaluationError(f"{what}: got {len(ids)} ids for {n} references")
    return [str(i) for i in ids]


def normalize_references(refs: Sequence[str], ids: list[str], normalizer: Normalizer) -> list[str]:
    """Normalized references; one that normalizes to nothing is an error naming its id."""
    out = []
    for utt_id, ref in zip(ids, refs):
        try:
            out.append(normalizer(ref))
        except TextRejected as exc:
            raise EvaluationError(
                f"utterance {utt_id}: field 'text' {ref!r} is unusable as a reference with {normalizer.name} "
                f"({exc}); data prep should have quarantined it"
            ) from exc
    return out


@functools.lru_cache(maxsize=8)
def _lenient(config: TextConfig) -> Normalizer:
    return Normalizer(dataclasses.replace(config, check_alphabet=False))


def normalize_hypothesis(hyp: str, utt_id: str, normalizer: Normalizer) -> tuple[str, str | None]:
    """A hypothesis as scored, and the reason the normalizer rejected it (None when accepted).

    Nothing speakable (``empty``, ``non_speech``) scores as the empty hypothesis. Text the normalizer rejects
    for its characters (a hallucination in another script) is normalized without the alphabet check and kept,
    so its words count as errors instead of vanishing. The one path for the report and for dev WER in training.
    """
    if not isinstance(hyp, str):
        raise EvaluationError(f"utterance {utt_id}: hypothesis must be a string, got {type(hyp).__name__}")
    try:
        return normalizer(hyp), None
    except TextRejected as exc:
        log.debug("utterance %s: hypothesis %r rejected by %s (%s)", utt_id, hyp, normalizer.name, exc)
        if exc.reason in ("empty", "non_speech"):
            return "", exc.reason
        try:
            return _lenient(normalizer.config)(hyp), exc.reason
        except TextRejected:
            return " ".join(hyp.lower().split()), exc.reason


def _counts(chunks: Iterable[Any]) -> Counts:
    n = {"equal": 0, "substitute": 0, "delete": 0, "insert": 0}
    for c in chunks:  # an insertion has no reference words: count its hypothesis words
        n[c.type] += c.hyp_end_idx - c.hyp_start_idx if c.type == "insert" else c.ref_end_idx - c.ref_start_idx
    return Counts(n["equal"], n["substitute"], n["delete"], n["insert"])


def _check_lengths(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise EvaluationError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise EvaluationError("nothing to score: no references")


def score(refs: Sequence[str], hyps: Sequence[str], normalizer: Normalizer, *,
          ids: Sequence[str] | None = None, speakers: Sequence[str | None] | None = None) -> Scores:
    """Score hypotheses against references (both raw; both normalized here with ``normalizer``).

    ``ids`` name the utterances in errors (default ``#0``, ``#1``...);
    ``speakers`` (None entries allowed) feed the per-speaker breakdown.
    """

    _check_lengths(refs, hyps)
    id_list = _ids(ids, len(refs), "score")
    if speakers is not None and len(speakers) != len(refs):
        raise EvaluationError(f"score: got {len(speakers)} speakers for {len(refs)} references")
    speaker_list = [UNKNOWN_SPEAKER if s is None else str(s) for s in (speakers or [None] * len(refs))]
    norm_refs = normalize_references(refs, id_list, normalizer)
    normalized = [normalize_hypothesis(h, i, normalizer) for h, i in zip(hyps, id_list)]
    norm_hyps = [h for h, _ in normalized]
    rejected = Counter(reason for _, reason in normalized if reason is not None)
    if rejected:
        log.info("score: %d hypotheses rejected by %s (empty or kept without the alphabet check): %s",
                 sum(rejected.values()), normalizer.name, dict(rejected))

    words = jiwer.process_words(norm_refs, norm_hyps)
    chars = jiwer.process_characters(norm_refs, norm_hyps)
    utts = []
    for k, utt_id in enumerate(id_list):
        ref_w, hyp_w = words.references[k], words.hypotheses[k]
        ops = tuple(AlignOp(c.type, tuple(ref_w[c.ref_start_idx:c.ref_end_idx]),
                            tuple(hyp_w[c.hyp_start_idx:c.hyp_end_idx])) for c in words.alignments[k])
        utts.append(UttScore(id=utt_id, speaker=speaker_list[k], reference=norm_refs[k],
                             hypothesis=norm_hyps[k], hypothesis_rejected=normalized[k][1],
                             words=_counts(words.alignments[k]), chars=_counts(chars.alignments[k]), ops=ops))
    total_words = Counts(words.hits, words.substitutions, words.deletions, words.insertions)
    total_chars = Counts(chars.hits, chars.substitutions, chars.deletions, chars.insertions)
    summary = _summary(total_words, total_chars, len(utts))

    raw_hyps = [h if h.strip() else "" for h in hyps]
    raw_w = jiwer.process_words(list(refs), raw_hyps)
    raw_c = jiwer.process_characters(list(refs), raw_hyps)
    raw = {"wer": raw_w.wer, "cer": raw_c.cer, "hits": raw_w.hits, "substitutions": raw_w.substitutions,
           "deletions": raw_w.deletions, "insertions": raw_w.insertions}
    return Scores(**summary, raw=raw, per_speaker=_per_speaker(utts),
                  rejected_hypotheses=dict(sorted(rejected.items())), utterances=tuple(utts))


# ------------------------------------------------------------------ domain terms


@dataclass(frozen=True)
class TermStat:
    """Recall of one domain term."""

    term: str  # the term as given
    normalized: str  # the term after the scoring normalizer
    occurrences: int  # occurrences in the normalized references
    hits: int  # occurrences recognized at the aligned position
    missed_in: tuple[str, ...] = ()  # utterance id of each missed occurrence

    @property
    def recall(self) -> float | None:
        return self.hits / self.occurrences if self.occurrences else None


@dataclass(frozen=True)
class TermScores:
    """Per-term and overall recall of domain terms."""

    recall: float | None  # pooled over all occurrences of all terms; None when no term occurs
    occurrences: int
    hits: int
    terms: tuple[TermStat, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "recall": self.recall, "occurrences": self.occurrences, "hits": self.hits,
            "per_term": {t.term: {"normalized": t.normalized, "occurrences": t.occurrences, "hits": t.hits,
                                  "recall": t.recall, "missed_in": list(t.missed_in)} for t in self.terms},
        }


def _hyp_positions(alignment: Iterable[Any], num_ref: int) -> list[int | None]:
    """For each reference word, the index of the hypothesis word it equals (None when not a hit)."""
    pos: list[int | None] = [None] * num_ref
    for c in alignment:
        if c.type == "equal":
            for k in range(c.ref_end_idx - c.ref_start_idx):
                pos[c.ref_start_idx + k] = c.hyp_start_idx + k
    return pos


def term_recall(refs: Sequence[str], hyps: Sequence[str], terms: Sequence[str], normalizer: Normalizer, *,
                ids: Sequence[str] | None = None) -> TermScores:
    """How many occurrences of each domain term in the references the hypotheses got right.

    Every (non-overlapping, left to right) occurrence of a term's words in a
    normalized reference counts once. It is recognized when, in the word
    alignment, each of its words is a hit and their hypothesis words are
    consecutive (the hypothesis says the whole term at that place, nothing
    inserted in between). The alignment is jiwer's minimal-edit alignment;
    where several alignments cost the same, jiwer's choice decides.
    Terms are normalized with ``normalizer``; terms that normalize the same are
    merged (first spelling kept).
    """

    _check_lengths(refs, hyps)
    id_list = _ids(ids, len(refs), "term_recall")
    norm_terms: dict[str, str] = {}  # normalized -> as given
    for term in terms:
        try:
            norm = normalizer(term)
        except TextRejected as exc:
            raise EvaluationError(f"term {term!r}: unusable with {normalizer.name} ({exc})") from exc
        norm_terms.setdefault(norm, term)
    norm_refs = normalize_references(refs, id_list, normalizer)
    norm_hyps = [normalize_hypothesis(h, i, normalizer)[0] for h, i in zip(hyps, id_list)]
    out = jiwer.process_words(norm_refs, norm_hyps)
    positions = [_hyp_positions(a, len(r)) for a, r in zip(out.alignments, out.references)]
    stats = []
    for norm, term in norm_terms.items():
        words = norm.split()
        k, occurrences, hits, missed = len(words), 0, 0, []
        for utt_id, ref_words, pos in zip(id_list, out.references, positions):
            i = 0
            while i + k <= len(ref_words):
                if ref_words[i:i + k] != words:
                    i += 1
                    continue
                occurrences += 1
                span = pos[i:i + k]
                if all(p is not None for p in span) and all(b == a + 1 for a, b in zip(span, span[1:])):
                    hits += 1
                else:
                    missed.append(utt_id)
                i += k
        stats.append(TermStat(term=term, normalized=norm, occurrences=occurrences, hits=hits,
                              missed_in=tuple(missed)))
    absent = [s.term for s in stats if s.occurrences == 0]
    if absent:
        log.warning("term_recall: %d of %d terms never occur in the references: %s",
                    len(absent), len(stats), absent[:10])
    occurrences, hits = sum(t.occurrences for t in stats), sum(t.hits for t in stats)
    return TermScores(recall=hits / occurrences if occurrences else None, occurrences=occurrences, hits=hits,
                      terms=tuple(stats))


def read_terms(path: Path | str) -> list[str]:
    """Domain terms from a text file: one term a line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    terms = []
    for line in path.read_text(encoding="utf-8").splitlines():
        term = line.split("#", 1)[0].strip()
        if term:
            terms.append(term)
    if not terms:
        raise EvaluationError(f"{path}: no terms (one term a line, '#' starts a comment)")
    return terms
