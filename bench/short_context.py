"""Whisper with a shorter encoder context: WER and time of greedy decoding when the encoder sees only the
first N positions of its 30-s window (the "audio_ctx" trick), zero-shot, against the full 1500.

Baseline (named, measured in the same run): the unchanged model, the encoder over the whole 30-s window
(3000 mel frames, 1500 positions) as Whisper was trained. Against it, for each ``--positions`` value: the
same log-mel features cut to their first 2N frames, the encoder's conv stem, the first N positional
embeddings and every layer run on those, then the same greedy decoding (language forced). Clips longer than
the shortest context are left out (``--max-s``), so no system loses audio. Prints WER (the project's
normalizer) and seconds (encoder + decoding, 2 threads unless ``torch.set_num_threads`` says otherwise) of
each, and the time ratio to the baseline. It says nothing yet about a model trained that way, nor about the
served path: faster-whisper always runs the encoder on 30-s windows.

Run: ``python bench/short_context.py --manifest runs/es-medical/data/medical/test.jsonl [--positions 500]``
"""

from __future__ import annotations

import argparse
import sys
import time

from speechtl.audio import load as load_audio
from speechtl.data.manifest import read_manifest
from speechtl.evaluate.scoring import score, scoring_normalizer
from speechtl.models.encoder_stages import run_encoder
from speechtl.models.registry import resolve
from speechtl.models.whisper import WhisperASR

FULL = 1500  # encoder positions of a 30-s window


def encode(model, feats, positions: int):
    """The encoder's output on the first ``positions`` positions (``feats``: log-mel, 3000 frames): run_encoder
    takes a window shorter than 30 s (the first 2 x positions frames, the first position embeddings)."""
    return run_encoder(model, feats[..., : 2 * positions])


def decode(asr: WhisperASR, clips: list, lang: str, positions: int, batch_size: int) -> tuple[list[str], float]:
    """Greedy transcripts of ``clips`` with the encoder on ``positions`` positions, and the seconds it took."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    started, hyps = time.perf_counter(), []
    with torch.no_grad():
        for lo in range(0, len(clips), batch_size):
            hidden = encode(asr.model, asr.features(clips[lo:lo + batch_size]), positions)
            out = asr.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), language=lang,
                                     task="transcribe", max_new_tokens=96, num_beams=1)
            hyps += asr.tokenizer.batch_decode(out, skip_special_tokens=True)
    return hyps, time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--manifest", required=True)
    p.add_argument("--lang", default="es")
    p.add_argument("--positions", default="500", help="comma-separated encoder contexts to try (50 = 1 s)")
    p.add_argument("--max-clips", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    contexts = [int(n) for n in args.positions.split(",")]
    if not all(0 < n < FULL for n in contexts):
        p.error(f"--positions: each between 1 and {FULL - 1}")
    max_s = min(contexts) / 50 - 1.0  # a second of margin inside the shortest context
    utts = [u for u in read_manifest(args.manifest) if u.duration is not None and u.duration <= max_s]
    utts = utts[: args.max_clips]
    if not utts:
        p.error(f"{args.manifest}: no clip of at most {max_s:g} s")
    asr = WhisperASR.load(resolve(args.model).hf_dir)
    clips, refs = [load_audio(u.audio_filepath) for u in utts], [u.text for u in utts]
    normalizer = scoring_normalizer(args.lang)
    print(f"{args.model}, {len(utts)} clips of at most {max_s:g} s from {args.manifest}; greedy, {args.lang}")
    base_hyps, base_s = decode(asr, clips, args.lang, FULL, args.batch_size)
    print(f"{FULL:>5} positions (baseline)  WER {score(refs, base_hyps, normalizer).wer:6.1%}  {base_s:6.1f} s")
    for n in contexts:
        hyps, seconds = decode(asr, clips, args.lang, n, args.batch_size)
        same = sum(a == b for a, b in zip(hyps, base_hyps, strict=True))
        print(f"{n:>5} positions             WER {score(refs, hyps, normalizer).wer:6.1%}  {seconds:6.1f} s  "
              f"(x{base_s / seconds:.2f} faster; {same}/{len(utts)} transcripts as the baseline's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
