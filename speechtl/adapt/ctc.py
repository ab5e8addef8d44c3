"""The CTC route of ``speechtl adapt``: the baseline of a CTC checkpoint, the adapted model greedy and with the LM.

Systems scored on every set, with the same normalizer as the Whisper route:

- ``baseline``: for a Whisper checkpoint (CTC head on its encoder), the
  unadapted Whisper itself, the recognizer a team would otherwise deploy
  (decoded by :mod:`speechtl.adapt.run`); for a wav2vec2-family checkpoint that
  ships its own CTC head and ``vocab.json``, that checkpoint as it is. A
  checkpoint without a head has no baseline (a random head would only show
  ~100% WER), and the report says so.
- ``adapted``: the trained CTC model, greedy decoding.
- ``adapted+lm``: the same model with the lexicon beam search of
  :mod:`speechtl.models.ctc.decode`: a word n-gram estimated from the train
  transcripts and the recipe's LM text, and the recipe's terms boosted. Every
  dev and test sentence is removed from the LM text first (never test on what
  the LM saw); the LM weight and word score are chosen on dev.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.audio import load as load_audio
from speechtl.cache import encoder_cache_dir
from speechtl.config import RecipeConfig
from speechtl.data.manifest import Utterance, read_manifest, sentence_key
from speechtl.data.synth.corpus import read_sentences
from speechtl.evaluate.scoring import score
from speechtl.fsio import atomic_write_text
from speechtl.models.ctc.decode import BeamDecoder, greedy_decode
from speechtl.models.ctc.vocab import VocabError
from speechtl.models.encoder_cache import CachedEncoderTranscriber
from speechtl.models.wav2vec2 import CtcASR
from speechtl.text.normalize import Normalizer, TextRejected
from speechtl.train.ctc import label_normalizer

log = logging.getLogger(__name__)

Notify = Callable[[str], None]


class _Recorder:
    """A stand-in decoder that keeps each utterance's log-probs and answers greedily."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.symbols = symbols
        self.log_probs: list[np.ndarray] = []

    def decode(self, log_probs: np.ndarray) -> str:
        self.log_probs.append(np.array(log_probs, dtype=np.float32))
        return greedy_decode(log_probs, self.symbols)


def transcriber(asr: Any, result: Any, recipe: RecipeConfig, run_dir: Path) -> Any:
    """What evaluation decodes with: for the Whisper-encoder kind, the encoder cache the training read."""
    if not result.cache_stage:
        return asr

    cache_dir = encoder_cache_dir(recipe.train.cache_dir, run_dir)
    return CachedEncoderTranscriber(asr, cache_dir, precision=result.mixed_precision, stage=result.cache_stage,
                                    batch_size=recipe.train.cache_batch_size)


def _decode_all(target: Any, asr: Any, utts: list[Utterance], lang: str, batch_size: int) -> list[str]:
    by_utts = getattr(target, "transcribe_utterances", None)
    out: list[str] = []
    for lo in range(0, len(utts), batch_size):
        batch = utts[lo:lo + batch_size]
        if by_utts is not None:
            out += by_utts(batch, lang, batch_size=batch_size)
        else:
            out += asr.transcribe([load_audio(u.audio_filepath) for u in batch], lang, batch_size=batch_size)
    return out


def lm_sentences(recipe: RecipeConfig, train_manifest: Path, held_out: list[Path],
                 normalizer: Callable[[str], str]) -> tuple[list[str], dict[str, int]]:
    """Normalized LM text: train transcripts plus ``decode.lm_sentences`` files, without any held-out sentence.

    Text the normalizer rejects is counted (it cannot be spelled by the head
    anyway), never used silently; the counts go to the run's ``lm/lm_text.json``.
    """

    banned = {sentence_key(u.text) for path in held_out for u in read_manifest(path)}
    texts = [u.text for u in read_manifest(train_manifest)]
    for name in recipe.decode.lm_sentences:
        texts += [text for _, text in read_sentences(Path(name))]  # relative to the working directory, like synth
    out: list[str] = []
    stats = {"candidates": len(texts), "held_out_removed": 0, "rejected": 0, "duplicates": 0}
    seen: set[str] = set()
    for text in texts:
        key = sentence_key(text)
        if key in banned:
            stats["held_out_removed"] += 1
            continue
        if key in seen:
            stats["duplicates"] += 1
            continue
        seen.add(key)
        try:
            out.append(normalizer(text))
        except TextRejected:
            stats["rejected"] += 1
    stats["sentences"] = len(out)
    return out, stats


def beam_decoder(asr: Any, target: Any, recipe: RecipeConfig, run_dir: Path, train_manifest: Path,
                 dev_manifest: Path, held_out: list[Path], scoring: Normalizer, terms: list[str] | None,
                 notify: Notify) -> dict[str, Any]:
    """Build the LM beam decoder, choose its weights on dev, leave it on ``asr``; returns what was chosen."""

    started = time.perf_counter()
    sentences, stats = lm_sentences(recipe, train_manifest, [dev_manifest, *held_out], label_normalizer(scoring))
    terms = [label_normalizer(scoring)(t) for t in terms or ()]
    dev = read_manifest(dev_manifest)
    recorder = _Recorder(asr.symbols)
    asr.decoder = recorder
    greedy = _decode_all(target, asr, dev, recipe.lang, recipe.eval.batch_size)
    refs = [u.text for u in dev]
    tried = [{"lm_weight": None, "word_score": None, "dev_wer": score(refs, greedy, scoring).wer}]
    best: tuple[float, Any] | None = None
    cfg = recipe.decode
    for lm_weight in cfg.lm_weights:
        for word_score in cfg.word_scores:
            decoder = BeamDecoder.build(asr.symbols, sentences, workdir=run_dir / "lm", terms=terms,
                                        order=cfg.lm_order, beam_size=cfg.beam_size, lm_weight=lm_weight,
                                        word_score=word_score, term_boost=cfg.term_boost)
            hyps = [decoder.decode(lp) for lp in recorder.log_probs]
            wer = score(refs, hyps, scoring).wer
            tried.append({"lm_weight": lm_weight, "word_score": word_score, "dev_wer": wer})
            if best is None or wer < best[0]:
                best = (wer, (lm_weight, word_score))
    assert best is not None
    lm_weight, word_score = best[1]
    asr.decoder = BeamDecoder.build(asr.symbols, sentences, workdir=run_dir / "lm", terms=terms, order=cfg.lm_order,
                                    beam_size=cfg.beam_size, lm_weight=lm_weight, word_score=word_score,
                                    term_boost=cfg.term_boost)
    info = {"lm_text": stats, "tuning": tried, "chosen": {"lm_weight": lm_weight, "word_score": word_score,
                                                         "dev_wer": best[0]},
            "settings": asr.decoder.settings(), "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_text(run_dir / "lm" / "tuning.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    notify(f"lm: {stats['sentences']} sentences ({stats['held_out_removed']} held-out sentences removed), "
           f"{info['settings']['lexicon_words']} lexicon words; dev WER greedy {tried[0]['dev_wer']:.1%}, "
           f"beam {best[0]:.1%} at lm_weight {lm_weight}, word_score {word_score}")
    return info


def hf_baseline(model_dir: Path, lang: str, notify: Notify) -> Any | None:
    """A wav2vec2-family checkpoint with its own CTC head and vocabulary, or None (said why)."""

    try:
        return CtcASR.load(model_dir, lang=lang)
    except (ValueError, VocabError) as exc:
        notify(f"baseline: none ({exc})")
        return None
