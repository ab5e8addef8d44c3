"""CTC decoding of a character-level head: greedy, and beam search with a word n-gram LM and term boosting.

The head's vocabulary follows :mod:`speechtl.models.ctc.vocab`: ``<pad>`` (id 0) is
the CTC blank, ``<unk>`` is id 1, ``|`` is the word delimiter. Inputs are
log-softmax outputs (natural log), shape ``(num_frames, vocab_size)``.

Beam search runs flashlight-text's ``LexiconDecoder`` (the engine under
torchaudio's ``ctc_decoder``) with a KenLM model loaded from the ARPA file that
:mod:`speechtl.models.ctc.ngram_lm` estimates from domain text. It is a *lexicon*
decoder: it only outputs words of the LM text (and the terms); a word whose
spelling uses a character the head does not have cannot be in the lexicon and
is counted in ``settings()["lexicon_skipped_words"]``.

Term boosting: domain terms (one or more words) get ``term_boost`` added to the
LM score (log10 units, so the decoder sees ``lm_weight * term_boost``) for each
word of a term occurrence. It is done by a Python subclass of flashlight's
``LM`` that wraps the KenLM model and tracks the longest partly matched term
in its state: each word that extends a match earns the bonus at once (so the
term survives the beam), a match that breaks off before the term is complete
gives its bonus back, and an unfinished match at the end of the utterance is
refunded too. Overlapping terms count once per longest match. The wrapper costs
a Python call per word hypothesis, so it is only used when there are terms and
``term_boost != 0``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.fsio import atomic_write_text
from speechtl.models.ctc.ngram_lm import BOS, EOS, train_ngram
from speechtl.models.ctc.ngram_lm import UNK as LM_UNK
from speechtl.models.ctc.vocab import PAD, UNK, WORD_DELIMITER

logger = logging.getLogger(__name__)

INSTALL_HINT = "CTC beam search needs flashlight-text: pip install 'speechtl[ctc]'"


def _check_log_probs(log_probs: np.ndarray, num_symbols: int, ndim: int) -> None:
    if log_probs.ndim != ndim or log_probs.shape[-1] != num_symbols:
        raise ValueError(f"log_probs must have {ndim} dimensions with the last of size {num_symbols} (the "
                         f"vocabulary), got shape {tuple(log_probs.shape)}")


def _ids_to_text(ids: Iterable[int], symbols: Sequence[str]) -> str:
    out = []
    for i in ids:
        symbol = symbols[i]
        if symbol == WORD_DELIMITER:
            out.append(" ")
        elif symbol not in (PAD, UNK):
            out.append(symbol)
    return " ".join("".join(out).split())


def greedy_decode(log_probs: np.ndarray, symbols: Sequence[str], length: int | None = None) -> str:
    """Best path of ``(num_frames, vocab_size)`` scores: argmax, collapse repeats, drop blanks.

    ``|`` becomes a space and spaces are collapsed and stripped. ``<unk>``
    emits nothing (the head could not name the character; it is not turned
    into a placeholder). Frames from ``length`` on are ignored (padding).
    """
    log_probs = np.asarray(log_probs)
    _check_log_probs(log_probs, len(symbols), 2)
    best = log_probs[:length].argmax(axis=-1)
    blank = symbols.index(PAD)
    ids = [int(i) for k, i in enumerate(best) if i != blank and (k == 0 or i != best[k - 1])]
    return _ids_to_text(ids, symbols)


def greedy_decode_batch(log_probs: np.ndarray, symbols: Sequence[str],
                        lengths: Sequence[int] | None = None) -> list[str]:
    """:func:`greedy_decode` of a ``(batch, num_frames, vocab_size)`` array; ``lengths`` are frames per item."""
    log_probs = np.asarray(log_probs)
    _check_log_probs(log_probs, len(symbols), 3)
    if lengths is not None and len(lengths) != len(log_probs):
        raise ValueError(f"got {len(lengths)} lengths for a batch of {len(log_probs)}")
    return [greedy_decode(item, symbols, None if lengths is None else int(lengths[b]))
            for b, item in enumerate(log_probs)]


class TermMatcher:
    """Bonus accounting for term occurrences over a word sequence (any hashable word type).

    The state is the longest suffix of the words so far that is a prefix of a
    term. See the module docstring for the rules; the total over a sequence
    (steps plus :meth:`finish`) is ``boost`` times the number of words in
    completed term occurrences.
    """

    def __init__(self, terms: Iterable[Sequence[Hashable]], boost: float) -> None:
        self.terms = {tuple(t) for t in terms if len(t)}
        self.prefixes = {t[:k] for t in self.terms for k in range(1, len(t) + 1)}
        self.boost = float(boost)

    def _completed(self, prefix: tuple) -> int:
        return max((len(prefix) - k for k in range(len(prefix)) if prefix[k:] in self.terms), default=0)

    def step(self, prefix: tuple, word: Hashable) -> tuple[tuple, float]:
        """New state and bonus after ``word``."""
        extended = (*prefix, word)
        if extended in self.prefixes:
            return extended, self.boost
        new = next((extended[k:] for k in range(1, len(extended)) if extended[k:] in self.prefixes), ())
        return new, self.boost * (len(new) - len(prefix) + self._completed(prefix))

    def finish(self, prefix: tuple) -> float:
        """Bonus at the end of the sequence (the refund of an unfinished match)."""
        return self.boost * (self._completed(prefix) - len(prefix))


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    """KenLM writes its loading progress to file descriptor 2; keep it in the debug log instead."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            logger.debug("KenLM: %s", sink.read().decode(errors="replace").strip())


def _boosted_lm(kenlm: Any, matcher: TermMatcher, order: int) -> Any:
    """A flashlight ``LM`` that adds term bonuses to ``kenlm``'s scores (see the module docstring)."""
    from flashlight.lib.text.decoder import LM, LMState

    class BoostedLM(LM):
        def __init__(self) -> None:
            LM.__init__(self)
            self._states: dict[tuple, LMState] = {}  # key -> canonical state (identical keys merge in the beam)
            self._info: dict[LMState, tuple[tuple, Any]] = {}  # state -> (key, KenLM state)

        def _state(self, key: tuple, ken_state: Any) -> LMState:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = LMState()
                self._info[state] = (key, ken_state)
            return state

        def start(self, start_with_nothing: bool) -> LMState:
            self._states.clear()
            self._info.clear()
            history = () if start_with_nothing else (-1,)  # -1 stands for <s>
            return self._state((history[-(order - 1):] if order > 1 else (), (), False),
                               kenlm.start(start_with_nothing))

        def score(self, state: LMState, token_index: int) -> tuple[LMState, float]:
            (history, prefix, _), ken_state = self._info[state]
            ken_out, score = kenlm.score(ken_state, token_index)
            prefix, bonus = matcher.step(prefix, token_index)
            history = (*history, token_index)[-(order - 1):] if order > 1 else ()
            return self._state((history, prefix, False), ken_out), score + bonus

        def finish(self, state: LMState) -> tuple[LMState, float]:
            (history, prefix, _), ken_state = self._info[state]
            ken_out, score = kenlm.finish(ken_state)
            return self._state((history, (), True), ken_out), score + matcher.finish(prefix)

    return BoostedLM()


def _lexicon(words: Iterable[str], symbols: tuple[str, ...]) -> tuple[dict[str, list[int]], list[str]]:
    """Each LM word spelled in CTC symbol indices (then the word delimiter), and the words it cannot spell."""
    letters = set(symbols) - {PAD, UNK, WORD_DELIMITER}
    lexicon: dict[str, list[int]] = {}
    skipped: list[str] = []
    for word in words:
        if word in (BOS, EOS, LM_UNK):
            continue
        if all(c in letters for c in word):
            lexicon[word] = [symbols.index(c) for c in word] + [symbols.index(WORD_DELIMITER)]
        else:
            skipped.append(word)
    if skipped:
        logger.warning("lexicon: %d of %d LM words use characters outside the CTC vocabulary and cannot be "
                       "decoded, e.g. %s", len(skipped), len(skipped) + len(lexicon), skipped[:5])
    if not lexicon:
        raise ValueError("BeamDecoder.build: no LM word can be spelled with the CTC vocabulary")
    return lexicon, skipped


class BeamDecoder:
    """Lexicon beam search over CTC log-probs with a KenLM n-gram model; build it with :meth:`build`.

    Not thread-safe: flashlight's decoder keeps per-call state.
    """

    def __init__(self, decoder: Any, lm: Any, word_dict: Any, symbols: Sequence[str], settings: dict) -> None:
        self._decoder, self._lm, self._word_dict = decoder, lm, word_dict  # _lm kept alive for the decoder
        self.symbols = tuple(symbols)
        self._settings = settings

    @classmethod
    def build(cls, symbols: Sequence[str], lm_sentences: Iterable[str], *, workdir: Path | str,
              terms: Sequence[str] = (), order: int = 3, beam_size: int = 50, beam_size_token: int | None = None,
              beam_threshold: float = 25.0, lm_weight: float = 2.0, word_score: float = 0.0,
              sil_score: float = 0.0, term_boost: float = 1.0) -> BeamDecoder:
        """Estimate the LM from ``lm_sentences`` plus ``terms``, write ``lm.arpa``, ``lexicon.txt`` and
        ``decoder.json`` in ``workdir`` and wire up flashlight's decoder.

        ``lm_weight`` scales the LM's log10 scores against the acoustic natural-log
        scores; ``word_score`` is added per word; ``term_boost`` (log10 units, scaled
        by ``lm_weight``) per word of a term occurrence. Tune them on dev data.
        """
        try:
            from flashlight.lib.text.decoder import (
                CriterionType,
                LexiconDecoder,
                LexiconDecoderOptions,
                SmearingMode,
                Trie,
            )
            from flashlight.lib.text.decoder.kenlm import KenLM
            from flashlight.lib.text.dictionary import Dictionary
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        symbols = tuple(symbols)
        for special in (PAD, UNK, WORD_DELIMITER):
            if special not in symbols:
                raise ValueError(f"symbols: the CTC vocabulary has no {special!r}")
        terms = [" ".join(t.split()) for t in terms if t.split()]
        sentences = [s for s in lm_sentences if s.split()] + terms
        if not sentences:
            raise ValueError("BeamDecoder.build: lm_sentences and terms are empty; a lexicon decoder needs LM "
                             "text (use greedy_decode without one)")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        model = train_ngram(sentences, order=order)
        arpa_path = model.write_arpa(workdir / "lm.arpa")

        lexicon, skipped = _lexicon(model.vocab, symbols)
        atomic_write_text(workdir / "lexicon.txt", "".join(
            f"{w}\t{' '.join(symbols[i] for i in ids)}\n" for w, ids in lexicon.items()))

        word_dict = Dictionary()
        for word in [*lexicon, LM_UNK]:
            word_dict.add_entry(word)
        unk_word = word_dict.get_index(LM_UNK)
        word_dict.set_default_index(unk_word)
        with _stderr_to_log():
            kenlm = KenLM(str(arpa_path), word_dict)

        term_ids = [[word_dict.get_index(w) for w in t.split()] for t in terms if all(w in lexicon for w in t.split())]
        terms_skipped = len(terms) - len(term_ids)
        if terms_skipped:
            logger.warning("%d of %d terms use characters outside the CTC vocabulary and are not boosted",
                           terms_skipped, len(terms))
        lm = _boosted_lm(kenlm, TermMatcher(term_ids, term_boost), order) if term_ids and term_boost else kenlm

        silence, blank = symbols.index(WORD_DELIMITER), symbols.index(PAD)
        trie = Trie(len(symbols), silence)
        start = lm.start(False)
        for word, ids in lexicon.items():
            _, score = lm.score(start, word_dict.get_index(word))
            trie.insert(ids, word_dict.get_index(word), score)
        trie.smear(SmearingMode.MAX)
        token_beam = len(symbols) if beam_size_token is None else beam_size_token
        options = LexiconDecoderOptions(beam_size, token_beam, beam_threshold, lm_weight, word_score,
                                        float("-inf"), sil_score, False, CriterionType.CTC)
        decoder = LexiconDecoder(options, trie, lm, silence, blank, unk_word, [], False)

        settings = {"order": order, "beam_size": beam_size, "beam_size_token": token_beam,
                    "beam_threshold": beam_threshold, "lm_weight": lm_weight, "word_score": word_score,
                    "sil_score": sil_score, "term_boost": term_boost, "num_terms": len(terms),
                    "terms_skipped": terms_skipped, "vocab_size": len(symbols), "lm_sentences": len(sentences),
                    "lm_discounts": list(model.discounts), "lexicon_words": len(lexicon),
                    "lexicon_skipped_words": len(skipped), "lexicon_skipped_examples": skipped[:20],
                    "arpa_path": str(arpa_path)}
        atomic_write_text(workdir / "decoder.json", json.dumps(settings, ensure_ascii=False, indent=1) + "\n")
        return cls(decoder, lm, word_dict, symbols, settings)

    def settings(self) -> dict:
        """What decoded a run (the content of ``decoder.json``)."""
        return dict(self._settings)

    def decode(self, log_probs: np.ndarray, length: int | None = None) -> str:
        """Best word sequence for ``(num_frames, vocab_size)`` natural-log scores; frames from ``length`` on are
        ignored."""
        log_probs = np.asarray(log_probs)
        _check_log_probs(log_probs, len(self.symbols), 2)
        emissions = np.ascontiguousarray(log_probs[:length], dtype=np.float32)
        num_frames = emissions.shape[0]
        if num_frames == 0:
            return ""
        results = self._decoder.decode(emissions.ctypes.data, num_frames, emissions.shape[1])
        if not results:
            return ""
        words = [self._word_dict.get_entry(i) for i in results[0].words if i >= 0]
        return " ".join(w for w in words if w != LM_UNK)

    def decode_batch(self, log_probs: np.ndarray, lengths: Sequence[int] | None = None) -> list[str]:
        """:meth:`decode` of a ``(batch, num_frames, vocab_size)`` array; ``lengths`` are frames per item."""
        log_probs = np.asarray(log_probs)
        _check_log_probs(log_probs, len(self.symbols), 3)
        if lengths is not None and len(lengths) != len(log_probs):
            raise ValueError(f"got {len(lengths)} lengths for a batch of {len(log_probs)}")
        return [self.decode(item, None if lengths is None else int(lengths[b])) for b, item in enumerate(log_probs)]
