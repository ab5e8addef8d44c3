"""Weight-space interpolation of the base and the adapted Whisper (WiSE-FT), with alpha chosen on dev data.

Fine-tuning on a few voices moves the model toward them and away from the
speakers it has never heard. Interpolating the weights,
``theta = (1 - alpha) * theta_base + alpha * theta_adapted`` (Wortsman et al.,
"Robust fine-tuning of zero-shot models", 2022), keeps much of the domain gain
while giving back the base model's robustness, and costs no training: only a
decode of the dev sets per candidate alpha.

- :func:`interpolate` mixes two state dicts; ``alpha=0`` returns the base
  tensors and ``alpha=1`` the adapted ones exactly, and a tensor the two models
  share (a frozen layer) is returned untouched, so encoder-cache rows keyed on
  the frozen weights stay valid.
- :func:`select_alpha` decodes candidates on the dev sets it is given
  (never a test set: it is not handed one) and keeps the lowest WER of the
  dev sets joined into one (errors of every set over reference words of
  every set, so each word weighs the same and a small set cannot outvote a
  large one; a no-speech set adds its output words as insertions and no
  reference words); a tie goes to the smaller alpha, nearer the base model.
  It decodes the whole grid, or descends from the largest alpha while the
  joined WER falls (fewer decodes: the base model only when every alpha
  above it was better than the next).
- :class:`Interpolator` holds one working Whisper whose weights it sets to
  any alpha, and writes the chosen one as a plain transformers directory.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from speechtl.fsio import swap_dir
from speechtl.models.whisper import WhisperASR

log = logging.getLogger(__name__)

SEARCHES = ("grid", "descend")


def interpolate(base: Mapping[str, Any], adapted: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """``(1 - alpha) * base + alpha * adapted`` per tensor (float32 arithmetic, cast back to each tensor's dtype)."""
    import torch

    if not 0 <= alpha <= 1:
        raise ValueError(f"interpolate: alpha={alpha} must be in [0, 1]")
    if set(base) != set(adapted):
        missing = sorted(set(base) ^ set(adapted))
        raise ValueError(f"interpolate: the models differ in parameters, e.g. {missing[:3]}")
    out = {}
    for name, b in base.items():
        a = adapted[name]
        if b.shape != a.shape:
            raise ValueError(f"interpolate: parameter {name} has shape {tuple(b.shape)} in the base model and "
                             f"{tuple(a.shape)} in the adapted one")
        if alpha == 0:
            out[name] = b.clone()
        elif alpha == 1 or not torch.is_floating_point(a) or torch.equal(a, b):
            out[name] = a.clone()
        else:
            mixed = torch.lerp(b.to(torch.float32), a.to(torch.float32), alpha)
            out[name] = mixed.to(a.dtype)
    return out


class DevScore(NamedTuple):
    """One dev set's result at one alpha: the figure shown for the set, and what it adds to the joined WER."""

    rate: float  # the set's own WER (or, for a no-speech set, its share of clips with words)
    errors: int  # word errors: S + D + I (a no-speech set: every output word)
    words: int  # reference words (a no-speech set: 0)


def joined_wer(scores: Mapping[str, DevScore]) -> float:
    """The dev sets read as one: the errors of all of them over the reference words of all of them."""
    return sum(s.errors for s in scores.values()) / max(sum(s.words for s in scores.values()), 1)


def select_alpha(alphas: Sequence[float], dev_sets: Mapping[str, Path],
                 dev_score: Callable[[float, str, Path], DevScore], *, search: str = "grid") -> dict[str, Any]:
    """Decode candidates on each dev set with ``dev_score(alpha, ref, manifest)``; keep the lowest joined WER.

    The joined (pooled) dev WER is the errors of all sets over the reference words of all sets: the WER of
    the dev sets read as one. ``search="grid"`` decodes every alpha. ``search="descend"`` walks down
    from the largest alpha while the joined WER keeps falling and stops at the first alpha that is no better:
    the grid's minimum when the curve has one valley, as WiSE-FT curves do, for two or three decodes instead
    of all of them. The smallest alpha (the base model) is decoded only when the walk reaches it.

    Returns ``{"alpha": chosen, "candidates": [{"alpha", "dev_wer": {ref: rate}, "dev_errors": {ref: n},
    "dev_words": {ref: n}, "pooled_dev_wer"}] (the alphas decoded, ascending), "dev_sets": [refs],
    "search": search, "skipped": [alphas not decoded]}``.
    """
    if not dev_sets:
        raise ValueError("select_alpha: no dev set to choose alpha on (a source must use its dev split)")
    if search not in SEARCHES:
        raise ValueError(f"select_alpha: search {search!r} is not one of {SEARCHES}")
    grid = sorted(set(float(a) for a in alphas))
    scored: dict[float, dict[str, Any]] = {}

    def pooled_at(alpha: float) -> float:
        if alpha not in scored:
            got = {ref: dev_score(alpha, ref, manifest) for ref, manifest in dev_sets.items()}
            words = sum(g.words for g in got.values())
            if words <= 0:
                raise ValueError(f"select_alpha: the dev sets {list(dev_sets)} hold no reference words")
            scored[alpha] = {"alpha": alpha, "dev_wer": {ref: float(g.rate) for ref, g in got.items()},
                             "dev_errors": {ref: int(g.errors) for ref, g in got.items()},
                             "dev_words": {ref: int(g.words) for ref, g in got.items()},
                             "pooled_dev_wer": joined_wer(got)}
            log.info("interpolate: alpha %.2f, joined dev WER %.2f%% (%s)", alpha,
                     100 * scored[alpha]["pooled_dev_wer"],
                     ", ".join(f"{ref} {100 * g.rate:.1f}%" for ref, g in got.items()))
        return scored[alpha]["pooled_dev_wer"]

    if search == "grid":
        for alpha in grid:
            pooled_at(alpha)
    else:
        walk = grid[::-1]  # the largest first
        pooled_at(walk[0])
        for upper, lower in zip(walk, walk[1:]):
            if pooled_at(upper) <= pooled_at(lower):
                break
    candidates = [scored[a] for a in sorted(scored)]
    best = min(candidates, key=lambda c: (round(c["pooled_dev_wer"], 9), c["alpha"]))
    return {"alpha": best["alpha"], "candidates": candidates, "dev_sets": list(dev_sets), "search": search,
            "skipped": [a for a in grid if a not in scored]}


class Interpolator:
    """One working copy of the adapted Whisper whose weights :meth:`at` sets to any alpha."""

    def __init__(self, base_dir: Path | str, adapted_dir: Path | str) -> None:
        self.asr = WhisperASR.load(adapted_dir)
        self.adapted = {k: v.detach().clone() for k, v in self.asr.model.state_dict().items()}
        base = WhisperASR.load(base_dir).model.state_dict()
        self.base = {k: v.detach().clone() for k, v in base.items()}
        self.alpha = 1.0  # the weights loaded are the adapted ones

    def at(self, alpha: float) -> Any:
        """The working model (a WhisperASR) with weights at ``alpha``."""
        if alpha != self.alpha:
            self.asr.model.load_state_dict(interpolate(self.base, self.adapted, alpha))
            self.alpha = alpha
        return self.asr

    def save(self, alpha: float, out_dir: Path | str) -> Path:
        """Write the model at ``alpha`` as a transformers directory (written aside, then swapped into place)."""

        out_dir = Path(out_dir)
        tmp = out_dir.with_name(f".{out_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.at(alpha).save(tmp)
        swap_dir(tmp, out_dir)
        return out_dir
