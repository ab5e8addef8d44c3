"""Word n-gram language model with interpolated Kneser-Ney smoothing, written as ARPA.

KenLM's estimator (``lmplz``) has no wheel on PyPI, but the KenLM bundled in
flashlight-text *loads* ARPA files; this module estimates the model in pure
Python so that a CTC beam decoder (:mod:`speechtl.models.ctc.decode`) can use it.
It is meant for domain text (thousands to a few hundred thousand sentences):
every n-gram is kept in memory and nothing is pruned.

Estimation, for a model of order ``N``:

* Sentences are normalized text; each becomes ``<s> w1 ... wk </s>``.
* Adjusted counts: the highest order uses raw counts; a lower-order n-gram
  uses its continuation count (the number of distinct words seen right before
  it), except n-grams starting with ``<s>``, which have no left context and
  keep their raw count.
* Interpolated absolute discounting with one discount ``D_n`` per order:
  ``P(w|h) = max(c(h w) - D, 0) / c(h) + gamma(h) * P(w|h')`` with
  ``gamma(h) = D * N1+(h .) / c(h)`` and ``h'`` the history without its first
  word. Unigrams interpolate with the uniform distribution over the
  vocabulary, which is the only mass ``<unk>`` gets (unless the text holds
  the token ``<unk>``).
* ``D_n = n1 / (n1 + 2 n2)`` from the numbers of n-grams with adjusted count
  1 and 2, clipped to [0.1, 0.9]; 0.75 when either number is zero.

The ARPA file stores, for every n-gram seen, the interpolated ``log10 P(w|h)``
and, for every n-gram that is the history of a longer one, ``log10 gamma(h)``
as its backoff weight. Backing off through the file therefore gives exactly
the interpolated distribution, which sums to one over the vocabulary for any
history (``<s>`` is never predicted and gets the conventional -99).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from speechtl.fsio import atomic_file

logger = logging.getLogger(__name__)

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
LOG10_NEVER = -99.0  # ARPA convention for the probability of <s>
DEFAULT_DISCOUNT = 0.75
DISCOUNT_RANGE = (0.1, 0.9)

Ngram = tuple[str, ...]


class NGramError(ValueError):
    """Text or settings an n-gram model cannot be estimated from."""


@dataclass
class NGramModel:
    """An estimated back-off model: ``log10_probs[n-1]`` and ``log10_backoffs[n-1]`` hold the n-grams of order n."""

    order: int
    discounts: tuple[float, ...]  # D_n per order, index 0 = unigrams
    log10_probs: list[dict[Ngram, float]]
    log10_backoffs: list[dict[Ngram, float]]
    num_sentences: int

    @property
    def vocab(self) -> list[str]:
        """Every unigram, ``<s>``, ``</s>`` and ``<unk>`` included, sorted."""
        return sorted(g[0] for g in self.log10_probs[0])

    def log10_prob(self, word: str, history: Sequence[str]) -> float:
        """``log10 P(word | history)`` by ARPA back-off; unknown words score as ``<unk>``."""
        if (word,) not in self.log10_probs[0]:
            word = UNK
        context = tuple(w if (w,) in self.log10_probs[0] else UNK for w in history)[-(self.order - 1):] \
            if self.order > 1 else ()
        backoff_log10 = 0.0
        while True:
            gram = context + (word,)
            found = self.log10_probs[len(gram) - 1].get(gram)
            if found is not None:
                return backoff_log10 + found
            if not context:  # unreachable: every model has a <unk> unigram
                raise NGramError(f"no unigram for {word!r}")
            backoff_log10 += self.log10_backoffs[len(context) - 1].get(context, 0.0)
            context = context[1:]

    def logprob(self, words: Sequence[str]) -> float:
        """``log10`` probability of a sentence (its words, without markers), ``</s>`` included."""
        history: list[str] = [BOS]
        total_log10 = 0.0
        for word in [*words, EOS]:
            total_log10 += self.log10_prob(word, history)
            history.append(word)
        return total_log10

    def write_arpa(self, path: Path | str) -> Path:
        """Write the model as an ARPA file (temporary name, then renamed); returns the path."""
        path = Path(path)
        with atomic_file(path, "w", encoding="utf-8") as out:
            out.write("\\data\\\n")
            for n, table in enumerate(self.log10_probs, start=1):
                out.write(f"ngram {n}={len(table)}\n")
            for n, table in enumerate(self.log10_probs, start=1):
                out.write(f"\n\\{n}-grams:\n")
                backoffs = self.log10_backoffs[n - 1] if n < self.order else {}
                for gram in sorted(table):
                    line = f"{table[gram]:.7f}\t{' '.join(gram)}"
                    if gram in backoffs:
                        line += f"\t{backoffs[gram]:.7f}"
                    out.write(line + "\n")
            out.write("\n\\end\\\n")
        return path


def _discount(adjusted: Counter[Ngram], order_n: int) -> float:
    n1 = sum(1 for c in adjusted.values() if c == 1)
    n2 = sum(1 for c in adjusted.values() if c == 2)
    if n1 == 0 or n2 == 0:
        logger.debug("order %d: n1=%d n2=%d, using the default discount %.2f", order_n, n1, n2, DEFAULT_DISCOUNT)
        return DEFAULT_DISCOUNT
    low, high = DISCOUNT_RANGE
    return min(max(n1 / (n1 + 2 * n2), low), high)


def _adjusted_counts(raw: list[Counter[Ngram]]) -> list[Counter[Ngram]]:
    """Raw counts at the highest order, continuation counts below it (raw for n-grams starting with <s>)."""
    order = len(raw)
    adjusted = [Counter() for _ in range(order)]
    adjusted[-1] = Counter(raw[-1])
    for n in range(order - 1, 0, -1):  # fill order n (index n-1) from order n+1's raw n-grams
        for gram in raw[n]:
            adjusted[n - 1][gram[1:]] += 1
        for gram, count in raw[n - 1].items():
            if gram[0] == BOS:
                adjusted[n - 1][gram] = count
    return adjusted


def train_ngram(sentences: Iterable[str], order: int = 3, discount: float | None = None) -> NGramModel:
    """Estimate an interpolated Kneser-Ney model of ``order`` from normalized sentences.

    ``discount`` fixes ``D`` for every order (0 < D < 1); ``None`` estimates it
    per order. Empty sentences are skipped (and counted in the log); the
    tokens ``<s>`` and ``</s>`` inside a sentence are an error.
    """
    if order < 1:
        raise NGramError(f"order must be >= 1, got {order}")
    if discount is not None and not 0.0 < discount < 1.0:
        raise NGramError(f"discount must be in (0, 1), got {discount}")
    raw: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    num_sentences = skipped = 0
    for index, sentence in enumerate(sentences):
        words = sentence.split()
        if not words:
            skipped += 1
            continue
        if BOS in words or EOS in words:
            raise NGramError(f"sentence {index}: holds a sentence marker ({BOS} or {EOS}): {sentence!r}")
        num_sentences += 1
        tokens = [BOS, *words, EOS]
        for n in range(1, order + 1):
            for i in range(len(tokens) - n + 1):
                raw[n - 1][tuple(tokens[i:i + n])] += 1
    if skipped:
        logger.info("train_ngram: skipped %d empty sentences", skipped)
    if not num_sentences:
        raise NGramError("train_ngram: no non-empty sentences")
    del raw[0][(BOS,)]  # <s> is a context only, never predicted

    adjusted = _adjusted_counts(raw)
    discounts = tuple(discount if discount is not None else _discount(adjusted[n], n + 1) for n in range(order))
    log10_probs: list[dict[Ngram, float]] = [{} for _ in range(order)]
    log10_backoffs: list[dict[Ngram, float]] = [{} for _ in range(order)]

    # Unigrams: interpolate with the uniform distribution over the predictable vocabulary.
    vocab = {g[0] for g in adjusted[0]} | {EOS, UNK}
    total = sum(adjusted[0].values())
    d1 = discounts[0]
    uniform_mass = d1 * len(adjusted[0]) / total
    for word in vocab:
        p = max(adjusted[0].get((word,), 0) - d1, 0.0) / total + uniform_mass / len(vocab)
        log10_probs[0][(word,)] = math.log10(p)
    log10_probs[0][(BOS,)] = LOG10_NEVER

    for n in range(2, order + 1):
        counts = adjusted[n - 1]
        dn = discounts[n - 1]
        context_total: Counter[Ngram] = Counter()
        context_types: Counter[Ngram] = Counter()
        for gram, count in counts.items():
            context_total[gram[:-1]] += count
            context_types[gram[:-1]] += 1
        for context, ctx_total in context_total.items():
            log10_backoffs[n - 2][context] = math.log10(dn * context_types[context] / ctx_total)
        lower = NGramModel(n - 1, discounts, log10_probs, log10_backoffs, num_sentences)
        for gram, count in counts.items():
            context = gram[:-1]
            gamma = dn * context_types[context] / context_total[context]
            p_lower = 10.0 ** lower.log10_prob(gram[-1], context[1:])
            p = (count - dn) / context_total[context] + gamma * p_lower
            log10_probs[n - 1][gram] = math.log10(p)

    model = NGramModel(order, discounts, log10_probs, log10_backoffs, num_sentences)
    logger.info("train_ngram: %d sentences, order %d, n-grams %s, discounts %s", num_sentences, order,
                [len(t) for t in log10_probs], [round(d, 3) for d in discounts])
    return model


def read_arpa(path: Path | str) -> NGramModel:
    """Read an ARPA file back (the header counts must match the sections); discounts are unknown (NaN)."""
    path = Path(path)
    declared: dict[int, int] = {}
    probs: list[dict[Ngram, float]] = []
    backoffs: list[dict[Ngram, float]] = []
    section = 0  # 0: before \data\, -1: header, n: n-gram section
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            if line == "\\data\\":
                section = -1
            elif line == "\\end\\":
                break
            elif line.startswith("ngram ") and section == -1:
                n, count = line[len("ngram "):].split("=")
                declared[int(n)] = int(count)
            elif line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:-len("-grams:")])
                probs.append({})
                backoffs.append({})
            elif section > 0:
                fields = line.split("\t") if "\t" in line else line.split()
                if "\t" not in line:  # whitespace-separated: prob, n words, optional backoff
                    fields = [fields[0], " ".join(fields[1:1 + section]), *fields[1 + section:]]
                gram = tuple(fields[1].split())
                if len(gram) != section:
                    raise NGramError(f"{path}:{line_no}: expected a {section}-gram, got {fields[1]!r}")
                probs[section - 1][gram] = float(fields[0])
                if len(fields) > 2:
                    backoffs[section - 1][gram] = float(fields[2])
            else:
                raise NGramError(f"{path}:{line_no}: unexpected line {line!r}")
        else:
            raise NGramError(f"{path}: no \\end\\ marker")
    found = {n: len(t) for n, t in enumerate(probs, start=1)}
    if found != declared:
        raise NGramError(f"{path}: header counts {declared} do not match the sections {found}")
    order = len(probs)
    return NGramModel(order, tuple([math.nan] * order), probs, backoffs, num_sentences=0)
