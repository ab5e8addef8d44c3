"""The term list as Whisper's text prompt for the adapted model, kept only where the dev sets say so.

Prompting with the domain's terms is contextual biasing at no training cost, but a prompt can also be
written out on noise or bend general speech toward the terms. :func:`choose_prompt` decodes the dev sets
(the no-speech dev clips among them) with the prompt and compares the WER of those sets joined, the measure
the interpolation's alpha is chosen by, with the same model decoded without it. The prompt must also not
make the model write words on more no-speech dev clips: a voice agent answers those words, and a joined WER
counts a term written on a ringback as one insertion among a thousand reference words (the medical run's
prompt wrote terms on 7 of 24 no-speech dev clips, none without it, and still lowered the joined WER).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from speechtl.train.interpolate import DevScore, joined_wer

# (ref, manifest, prompt or None) -> that dev set's errors and reference words
Score = Callable[[str, Path, str | None], DevScore]


def without_prompt(interpolation: dict[str, Any] | None) -> dict[str, DevScore] | None:
    """The kept alpha's dev scores, decoded while alpha was chosen (None without an interpolation)."""
    if not interpolation:
        return None
    chosen = next((c for c in interpolation["candidates"] if c["alpha"] == interpolation["alpha"]), None)
    if chosen is None:
        return None
    return {ref: DevScore(chosen["dev_wer"][ref], chosen["dev_errors"][ref], chosen["dev_words"][ref])
            for ref in chosen["dev_wer"]}


def choose_prompt(dev_sets: Mapping[str, Path], score: Score, prompt: str,
                  without: dict[str, DevScore] | None = None, nonspeech: str | None = None) -> dict[str, Any]:
    """``{"prompt", "kept", "reason", "pooled_dev_wer": {"with", "without"}, "dev_wer": {"with"|"without":
    {ref: rate}}}``; ``without``: the scores without the prompt where they were decoded already (else decoded
    here); ``nonspeech``: the dev set of clips without speech (its rate is the share of clips with words)."""
    scores = {"with": {ref: score(ref, manifest, prompt) for ref, manifest in dev_sets.items()},
              "without": dict(without) if without is not None else {}}
    for ref, manifest in dev_sets.items():
        if ref not in scores["without"]:
            scores["without"][ref] = score(ref, manifest, None)
    joined = {key: joined_wer(value) for key, value in scores.items()}
    kept = False
    if nonspeech in dev_sets and scores["with"][nonspeech].rate > scores["without"][nonspeech].rate:
        reason = (f"more no-speech dev clips with words ({scores['with'][nonspeech].rate:.0%} against "
                  f"{scores['without'][nonspeech].rate:.0%} without)")
    elif joined["with"] >= joined["without"]:
        reason = "the joined dev WER did not fall"
    else:
        kept, reason = True, "the joined dev WER fell and no more no-speech dev clips got words"
    return {"prompt": prompt, "kept": kept, "reason": reason,
            "pooled_dev_wer": joined,
            "dev_wer": {key: {ref: s.rate for ref, s in value.items()} for key, value in scores.items()}}
