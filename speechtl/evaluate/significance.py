"""Is a WER (difference) real? Seeded bootstrap over utterances.

Both functions resample whole utterances with replacement and recompute the
pooled WER (errors / reference words over the resample), so long utterances
weigh what they weigh in the corpus WER. They take per-utterance scores in
either form the project writes: :class:`speechtl.evaluate.scoring.UttScore` objects
(``u.id``, ``u.words.errors``, ``u.words.num_ref``) or the rows of an
evaluation's ``hypotheses.jsonl`` (``id``, ``hits``, ``substitutions``,
``deletions``, ``insertions``).

* :func:`bootstrap_ci` - percentile interval of one system's WER.
* :func:`paired_bootstrap` - two systems on the same utterances: every
  resample takes the same utterances for both, so the interval is that of the
  WER difference ``b - a`` with the variation between utterances cancelled
  out. ``prob_b_better`` is the share of resamples where ``b``'s WER is
  strictly lower than ``a``'s; ``prob_tie`` the share where they are equal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_MAX_INDEX_ENTRIES = 1_000_000  # bound on one resample index matrix (about 8 MB of int64)


def _id_of(utt: Any) -> str:
    return str(utt["id"] if isinstance(utt, Mapping) else utt.id)


def _errors_and_ref(utt: Any, what: str) -> tuple[int, int]:
    """(S + D + I, reference words) of one utterance score or ``hypotheses.jsonl`` row."""
    if not isinstance(utt, Mapping):
        return int(utt.words.errors), int(utt.words.num_ref)
    missing = [k for k in ("id", "hits", "substitutions", "deletions", "insertions") if k not in utt]
    if missing:
        raise ValueError(f"{what}: utterance {utt.get('id', '?')}: missing field(s) {missing}")
    s, d, i, h = (int(utt[k]) for k in ("substitutions", "deletions", "insertions", "hits"))
    return s + d + i, h + s + d


def _arrays(utts: Sequence[Any], what: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    if not utts:
        raise ValueError(f"{what}: no utterances")
    ids = [_id_of(u) for u in utts]
    pairs = [_errors_and_ref(u, what) for u in utts]
    return ids, np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64)


def _check_level(level: float, num_samples: int, what: str) -> None:
    if not 0 < level < 1:
        raise ValueError(f"{what}: level must be in (0, 1), got {level}")
    if num_samples < 1:
        raise ValueError(f"{what}: num_samples must be >= 1, got {num_samples}")


def _resamples(n: int, num_samples: int, seed: int) -> Iterator[np.ndarray]:
    """Seeded index matrices (rows = resamples of ``n`` utterances), in chunks of bounded size."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_INDEX_ENTRIES // n)
    for start in range(0, num_samples, chunk):
        yield rng.integers(0, n, size=(min(chunk, num_samples - start), n))


def _pooled(errors: np.ndarray, ref_words: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return errors[idx].sum(axis=1) / np.maximum(ref_words[idx].sum(axis=1), 1)


def bootstrap_ci(utterances: Sequence[Any], *, level: float = 0.95, num_samples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of the pooled WER, resampling whole utterances."""
    _check_level(level, num_samples, "bootstrap_ci")
    _, errors, ref_words = _arrays(utterances, "bootstrap_ci")
    rates = np.concatenate([_pooled(errors, ref_words, idx)
                            for idx in _resamples(len(errors), num_samples, seed)])
    lo, hi = np.quantile(rates, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedBootstrap:
    """Paired bootstrap of the WER difference ``b - a`` (negative: ``b`` makes fewer errors)."""

    wer_a: float  # pooled WER of a on all utterances
    wer_b: float  # pooled WER of b on all utterances
    diff: float  # wer_b - wer_a on all utterances
    mean_diff: float  # mean of the resampled differences
    ci: tuple[float, float]  # percentile interval of the difference at ``level``
    prob_b_better: float  # share of resamples where b's WER < a's
    prob_tie: float  # share of resamples where the WERs are equal
    level: float
    num_samples: int
    seed: int
    num_utts: int

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


def _align(ids_a: list[str], ids_b: list[str]) -> np.ndarray:
    """Index into b of each utterance of a; an error names the first id the two lists do not share."""
    for ids, name in ((ids_a, "a"), (ids_b, "b")):
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise ValueError(f"paired_bootstrap: utterance id {i} appears twice in {name}")
            seen.add(i)
    where_b = {i: k for k, i in enumerate(ids_b)}
    for i in ids_a:
        if i not in where_b:
            raise ValueError(f"paired_bootstrap: utterance {i} is scored in a but not in b "
                             f"({len(ids_a)} vs {len(ids_b)} utterances); both must score the same set")
    if len(ids_b) != len(ids_a):
        in_a = set(ids_a)
        extra = next(i for i in ids_b if i not in in_a)
        raise ValueError(f"paired_bootstrap: utterance {extra} is scored in b but not in a "
                         f"({len(ids_a)} vs {len(ids_b)} utterances); both must score the same set")
    return np.array([where_b[i] for i in ids_a], dtype=np.int64)


def paired_bootstrap(a_utts: Sequence[Any], b_utts: Sequence[Any], num_samples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> PairedBootstrap:
    """Paired bootstrap of ``WER(b) - WER(a)`` over the same utterances (matched by id, any order).

    Raises ``ValueError`` naming the first utterance id that is in one list
    but not the other, or whose reference length differs between the two
    (then they were not scored on the same references).
    """
    _check_level(level, num_samples, "paired_bootstrap")
    ids_a, err_a, ref_a = _arrays(a_utts, "paired_bootstrap a")
    ids_b, err_b, ref_b = _arrays(b_utts, "paired_bootstrap b")
    order = _align(ids_a, ids_b)
    err_b, ref_b = err_b[order], ref_b[order]
    differ = np.flatnonzero(ref_a != ref_b)
    if differ.size:
        k = int(differ[0])
        raise ValueError(f"paired_bootstrap: utterance {ids_a[k]}: field 'num_ref_words' is {ref_a[k]} in a but "
                         f"{ref_b[k]} in b; both must be scored on the same references")
    diffs, b_better, ties = [], 0, 0
    for idx in _resamples(len(ids_a), num_samples, seed):
        errors_a, errors_b = err_a[idx].sum(axis=1), err_b[idx].sum(axis=1)  # same reference words for both
        diffs.append((errors_b - errors_a) / np.maximum(ref_a[idx].sum(axis=1), 1))
        b_better += int(np.count_nonzero(errors_b < errors_a))
        ties += int(np.count_nonzero(errors_b == errors_a))
    all_diffs = np.concatenate(diffs)
    lo, hi = np.quantile(all_diffs, [(1 - level) / 2, (1 + level) / 2])
    total_ref = max(int(ref_a.sum()), 1)
    wer_a, wer_b = int(err_a.sum()) / total_ref, int(err_b.sum()) / total_ref
    return PairedBootstrap(
        wer_a=wer_a, wer_b=wer_b, diff=wer_b - wer_a, mean_diff=float(all_diffs.mean()), ci=(float(lo), float(hi)),
        prob_b_better=b_better / num_samples, prob_tie=ties / num_samples, level=level, num_samples=num_samples,
        seed=seed, num_utts=len(ids_a),
    )
