"""Whisper beam-search decoding: speechtl's decoding against transformers' own, same transcripts.

Baseline (named, measured in the same run): ``WhisperASR`` decoding as transformers does it, with its
default cache for encoder-decoder beam search (the cross-attention keys and values computed on the
encoder output repeated for every beam and reordered after every step) and every decoder position
projected onto the vocabulary. Against it: speechtl's cache alone
(``speechtl.models.beam_cache.beam_cache``: those keys and values computed once per clip, kept at one
row per clip that the clip's beams attend to, ``clip_rows_attention``, and never reordered), then with
logits for the last position only (``last_position_logits``; what a prompt, ``--terms``, makes costly).
The encoder runs once, outside the timings; each system decodes the same encoder output in batches of
``--batch-size``, after one untimed warm-up clip. Prints the seconds of
each, the speed-up against the baseline, and how many transcripts differ from it (0 expected).

Run: ``python bench/decode.py MODEL_DIR MANIFEST [--beams 2] [--limit 48] [--terms FILE]`` (e.g. a
run's ``export/hf``, ``data/medical-espeak/test.jsonl`` and ``recipes/es/medical_terms.txt``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

import speechtl.models.whisper as whisper
from speechtl.audio import load as load_audio
from speechtl.data.manifest import read_manifest
from speechtl.evaluate.scoring import read_terms


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a Whisper model directory (transformers layout)")
    p.add_argument("manifest", type=Path)
    p.add_argument("--lang", default="es")
    p.add_argument("--beams", type=int, default=2)
    p.add_argument("--limit", type=int, default=48, help="first N utterances of the manifest")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--terms", type=Path, help="prompt every clip with this term list, as the medical recipe does")
    args = p.parse_args(argv)
    asr = whisper.WhisperASR.load(args.model)
    utts = read_manifest(args.manifest)[:args.limit]
    prompt = asr.term_prompt(read_terms(args.terms))[0] if args.terms else None
    with torch.no_grad():
        hidden = asr.model.model.encoder(asr.features([load_audio(u.audio_filepath) for u in utts])).last_hidden_state
    ours = whisper.beam_cache, whisper.clip_rows_attention, whisper.last_position_logits
    plain = lambda model: contextlib.nullcontext()  # noqa: E731
    systems = (("transformers (baseline)", (lambda *a, **k: None, plain, plain)),
               ("speechtl beam cache", (ours[0], ours[1], plain)), ("+ last-position logits", ours))
    asr.transcribe_encoded(hidden[:1], args.lang, prompt=prompt, num_beams=args.beams)  # warm-up, untimed
    results = {}
    for name, (cache, attention, logits) in systems:
        whisper.beam_cache, whisper.clip_rows_attention, whisper.last_position_logits = cache, attention, logits
        try:
            started = time.perf_counter()
            texts = asr.transcribe_encoded(hidden, args.lang, prompt=prompt, num_beams=args.beams,
                                           batch_size=args.batch_size)
            results[name] = (time.perf_counter() - started, texts)
        finally:
            whisper.beam_cache, whisper.clip_rows_attention, whisper.last_position_logits = ours
    print(f"{len(utts)} clips of {args.manifest}, beams of {args.beams}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, " + (f"prompted with {args.terms}" if prompt else "no prompt"))
    base_s, base_texts = results["transformers (baseline)"]
    for name, (seconds, texts) in results.items():
        differ = sum(a != b for a, b in zip(base_texts, texts, strict=True))
        print(f"  {name:<26} {seconds:7.1f} s  {seconds / len(utts):.3f} s/clip  speed-up {base_s / seconds:.2f}x  "
              f"{differ} of {len(utts)} transcripts differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
