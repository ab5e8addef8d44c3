"""What went wrong, beyond the WER: hallucinations and the most frequent confusions.

Both views read the word alignment of each utterance, in either form the
project writes: :class:`speechtl.evaluate.scoring.UttScore` objects or the rows of an
evaluation's ``hypotheses.jsonl`` (``ops`` as ``[op, ref words, hyp words]``).
They work on the normalized text, so punctuation and case never start or break
a pattern.

Hallucination rules (an utterance can match several):

* ``insertion_run`` - at least :data:`MIN_INSERTION_RUN` consecutive inserted
  words (hypothesis words aligned to no reference word).
* ``ngram_loop`` - an n-gram (n = 1..:data:`MAX_LOOP_N`) repeated at least
  :data:`MIN_LOOP_REPEATS` times back to back in the hypothesis ("de la de la
  de la"), more times than the reference repeats it there (a speaker who says
  "no no no" is not a loop).
* ``long_hypothesis`` - more than :data:`LONG_RATIO` times the reference's
  words and at least :data:`LONG_MIN_EXTRA_WORDS` words more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MIN_INSERTION_RUN = 3
MAX_LOOP_N = 4
MIN_LOOP_REPEATS = 3
LONG_RATIO = 2.0
LONG_MIN_EXTRA_WORDS = 4
MAX_EXAMPLES = 10  # utterances listed with their text per view
KINDS = ("insertion_run", "ngram_loop", "long_hypothesis")

Op = tuple[str, tuple[str, ...], tuple[str, ...]]  # (op, reference words, hypothesis words)


@dataclass(frozen=True)
class Aligned:
    """One utterance's normalized words and alignment."""

    id: str
    reference: tuple[str, ...]
    hypothesis: tuple[str, ...]
    ops: tuple[Op, ...]


def aligned(utt: Any) -> Aligned:
    """:class:`Aligned` from a ``UttScore`` or a ``hypotheses.jsonl`` row; errors name the id and the field."""
    if not isinstance(utt, Mapping):
        ops = tuple((op.op, tuple(op.ref), tuple(op.hyp)) for op in utt.ops)
        return Aligned(str(utt.id), tuple(utt.reference.split()), tuple(utt.hypothesis.split()), ops)
    utt_id = str(utt.get("id", "?"))
    for key in ("id", "reference_normalized", "hypothesis_normalized", "ops"):
        if key not in utt:
            raise ValueError(f"utterance {utt_id}: missing field {key!r} (a hypotheses.jsonl row is needed)")
    ops = []
    for entry in utt["ops"]:
        if not (isinstance(entry, Sequence) and len(entry) == 3):
            raise ValueError(f"utterance {utt_id}: field 'ops': {entry!r} is not [op, ref, hyp]")
        ops.append((str(entry[0]), tuple(str(entry[1]).split()), tuple(str(entry[2]).split())))
    return Aligned(utt_id, tuple(str(utt["reference_normalized"]).split()),
                   tuple(str(utt["hypothesis_normalized"] or "").split()), tuple(ops))


# ------------------------------------------------------------------ hallucinations


def longest_insertion_run(ops: Iterable[Op]) -> tuple[str, ...]:
    """The longest stretch of consecutive inserted words."""
    best: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    for op, _, hyp in ops:
        run = run + hyp if op == "insert" else ()
        if len(run) > len(best):
            best = run
    return best


def _repeats_at(words: Sequence[str], start: int, n: int) -> int:
    gram, count, pos = tuple(words[start:start + n]), 1, start + n
    while tuple(words[pos:pos + n]) == gram:
        count, pos = count + 1, pos + n
    return count


def _max_repeats(words: Sequence[str], gram: tuple[str, ...]) -> int:
    n = len(gram)
    return max((_repeats_at(words, i, n) for i in range(len(words) - n + 1) if tuple(words[i:i + n]) == gram),
               default=0)


def find_loop(hyp: Sequence[str], ref: Sequence[str] = ()) -> tuple[tuple[str, ...], int] | None:
    """The n-gram loop of ``hyp`` covering the most words (ties: the shortest n-gram), or None.

    A loop repeats an n-gram (n = 1..MAX_LOOP_N) at least MIN_LOOP_REPEATS
    times back to back, and more times than ``ref`` repeats it anywhere.
    """
    best: tuple[tuple[str, ...], int] | None = None
    for n in range(1, MAX_LOOP_N + 1):
        for start in range(len(hyp) - n * MIN_LOOP_REPEATS + 1):
            count = _repeats_at(hyp, start, n)
            if count < MIN_LOOP_REPEATS:
                continue
            gram = tuple(hyp[start:start + n])
            if count <= _max_repeats(ref, gram):
                continue
            if best is None or n * count > len(best[0]) * best[1]:
                best = (gram, count)
    return best


def is_long(hyp: Sequence[str], ref: Sequence[str]) -> bool:
    return len(hyp) > LONG_RATIO * len(ref) and len(hyp) - len(ref) >= LONG_MIN_EXTRA_WORDS


def hallucinations(utterances: Iterable[Any]) -> dict[str, Any]:
    """The hallucination view of one evaluation (see the module docstring for the rules).

    Returns ``rules`` (the thresholds), ``num_utts``, ``counts`` per kind and
    ``any``, ``ids`` per kind (every offending utterance) and ``examples``
    (up to MAX_EXAMPLES utterances with the matched pattern and the text).
    """
    ids: dict[str, list[str]] = {kind: [] for kind in KINDS}
    flagged: list[str] = []
    examples: list[dict[str, Any]] = []
    num_utts = 0
    for utt in map(aligned, utterances):
        num_utts += 1
        run = longest_insertion_run(utt.ops)
        loop = find_loop(utt.hypothesis, utt.reference)
        kinds = [kind for kind, hit in zip(KINDS, (len(run) >= MIN_INSERTION_RUN, loop is not None,
                                                   is_long(utt.hypothesis, utt.reference))) if hit]
        if not kinds:
            continue
        flagged.append(utt.id)
        for kind in kinds:
            ids[kind].append(utt.id)
        if len(examples) < MAX_EXAMPLES:
            examples.append({
                "id": utt.id, "kinds": kinds, "insertion_run": " ".join(run) if "insertion_run" in kinds else None,
                "loop": {"ngram": " ".join(loop[0]), "repeats": loop[1]} if loop else None,
                "ref_words": len(utt.reference), "hyp_words": len(utt.hypothesis),
                "reference": " ".join(utt.reference), "hypothesis": " ".join(utt.hypothesis),
            })
    return {
        "rules": {"min_insertion_run": MIN_INSERTION_RUN, "loop_ngram_n": [1, MAX_LOOP_N],
                  "min_loop_repeats": MIN_LOOP_REPEATS, "long_ratio": LONG_RATIO,
                  "long_min_extra_words": LONG_MIN_EXTRA_WORDS},
        "num_utts": num_utts,
        "counts": {**{kind: len(v) for kind, v in ids.items()}, "any": len(flagged)},
        "ids": ids,
        "examples": examples,
    }


# ------------------------------------------------------------------ confusions


def confusions(utterances: Iterable[Any], top: int = 20) -> dict[str, list[list[Any]]]:
    """The most frequent errors: substituted word pairs ``[ref, hyp, count]``, deleted and inserted words
    ``[word, count]``, most frequent first (ties alphabetical). Substitution runs pair words in order
    (jiwer's substitution runs have as many hypothesis as reference words)."""
    subs: Counter[tuple[str, str]] = Counter()
    dels: Counter[str] = Counter()
    ins: Counter[str] = Counter()
    for utt in map(aligned, utterances):
        for op, ref, hyp in utt.ops:
            if op == "substitute":
                subs.update(zip(ref, hyp))
            elif op == "delete":
                dels.update(ref)
            elif op == "insert":
                ins.update(hyp)

    def ranked(counter: Counter) -> list:
        return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]

    return {
        "substitutions": [[r, h, c] for (r, h), c in ranked(subs)],
        "deletions": [[w, c] for w, c in ranked(dels)],
        "insertions": [[w, c] for w, c in ranked(ins)],
    }
