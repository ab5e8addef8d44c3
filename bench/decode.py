"""Whisper beam-search decoding: speechtl's decoder cache against transformers' own, same transcripts.

Baseline (named, measured in the same run): ``WhisperASR`` decoding with transformers' default
cache for encoder-decoder beam search, which computes the cross-attention keys and values on the
encoder output repeated for every beam and reorders them after every step. Against it: the same
model and clips with speechtl's cache (``speechtl.models.beam_cache.beam_cache``: those keys and values
computed once per clip and never reordered). The encoder runs once, outside both timings; each
system decodes the same encoder output in batches of ``--batch-size``. Prints the seconds of each,
the speed-up, and how many transcripts differ (0 expected).

Run: ``python bench/decode.py MODEL_DIR MANIFEST [--beams 2] [--limit 48]`` (e.g. a run's
``export/hf`` and ``data/medical-espeak/test.jsonl``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import speechtl.models.whisper as whisper
from speechtl.audio import load as load_audio
from speechtl.data.manifest import read_manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a Whisper model directory (transformers layout)")
    p.add_argument("manifest", type=Path)
    p.add_argument("--lang", default="es")
    p.add_argument("--beams", type=int, default=2)
    p.add_argument("--limit", type=int, default=48, help="first N utterances of the manifest")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    asr = whisper.WhisperASR.load(args.model)
    utts = read_manifest(args.manifest)[:args.limit]
    with torch.no_grad():
        hidden = asr.model.model.encoder(asr.features([load_audio(u.audio_filepath) for u in utts])).last_hidden_state
    ours = whisper.beam_cache
    results = {}
    for name, cache in (("transformers' cache (baseline)", lambda *a, **k: None), ("speechtl beam cache", ours)):
        whisper.beam_cache = cache
        try:
            started = time.perf_counter()
            texts = asr.transcribe_encoded(hidden, args.lang, num_beams=args.beams, batch_size=args.batch_size)
            results[name] = (time.perf_counter() - started, texts)
        finally:
            whisper.beam_cache = ours
    (base_s, base_texts), (our_s, our_texts) = results.values()
    print(f"{len(utts)} clips of {args.manifest}, beams of {args.beams}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    for name, (seconds, _) in results.items():
        print(f"  {name:<32} {seconds:7.1f} s  {seconds / len(utts):.3f} s/clip")
    differ = sum(a != b for a, b in zip(base_texts, our_texts, strict=True))
    print(f"speed-up {base_s / our_s:.2f}x; {differ} of {len(utts)} transcripts differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
