"""Seeded, speaker- and sentence-disjoint train/dev/test splits of a prepared manifest."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass

from speechtl.data.manifest import QuarantineRecord, Utterance, sentence_key

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class SplitConfig:
    """How a prepared manifest is divided into train/dev/test."""

    dev_share: float = 0.1  # share of speakers and of sentences held out for dev
    test_share: float = 0.2  # share of speakers and of sentences held out for test
    by_speaker: bool = True  # hold out speakers (needs at least 3 speakers)
    by_sentence: bool = True  # hold out sentences: no test sentence text in train
    seed: int = 0  # the seed of every random choice here

    def __post_init__(self) -> None:
        # test_share=1 (dev_share=0): an evaluation-only corpus, every utterance is test
        evaluation_only = self.test_share == 1 and self.dev_share == 0
        if not evaluation_only and not (
            0 <= self.dev_share < 1 and 0 <= self.test_share < 1 and self.dev_share + self.test_share < 1
        ):
            raise ValueError(
                f"split: dev_share={self.dev_share} and test_share={self.test_share} must be in [0, 1) "
                "and sum to less than 1 (or test_share=1 with dev_share=0: everything is test)"
            )


def assign(keys: Iterable[str], config: SplitConfig, salt: str) -> dict[str, str]:
    """Seeded key -> split name; ``salt`` is "speaker" or "sentence" (what :func:`split` uses)."""
    unique = sorted(set(keys))
    random.Random(f"{config.seed}:{salt}").shuffle(unique)
    n = len(unique)
    n_test = round(n * config.test_share)
    n_dev = round(n * config.dev_share)
    if n >= 3:  # keep every non-empty share represented when there is room
        n_test = max(n_test, 1 if config.test_share > 0 else 0)
        n_dev = max(n_dev, 1 if config.dev_share > 0 else 0)
    out = {}
    for i, key in enumerate(unique):
        out[key] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return out


def split(
    utterances: list[Utterance], config: SplitConfig
) -> tuple[dict[str, list[Utterance]], list[QuarantineRecord]]:
    """Seeded speaker- and sentence-disjoint split.

    Speakers and sentences are each assigned to a split; an utterance lands
    in a split when its speaker and its sentence both belong there. When both
    rules are on, an utterance whose speaker and sentence disagree (a train
    voice reading a test sentence) belongs to no split: it is returned as a
    ``split``/``cross_split`` record so that nothing disappears unseen.
    """
    by_speaker = config.by_speaker
    if by_speaker and len({u.speaker_key for u in utterances}) < 3:
        log.warning("split: fewer than 3 speakers, so the split cannot hold speakers out; splitting by sentence only")
        by_speaker = False
    if not by_speaker and not config.by_sentence:
        raise ValueError("split: at least one of by_speaker and by_sentence must be on")
    speaker_split = assign((u.speaker_key for u in utterances), config, "speaker") if by_speaker else {}
    sentence_split = (
        assign((sentence_key(u.text) for u in utterances), config, "sentence") if config.by_sentence else {}
    )
    out: dict[str, list[Utterance]] = {name: [] for name in SPLITS}
    leftovers = []
    for utt in utterances:
        s_spk = speaker_split.get(utt.speaker_key)
        s_txt = sentence_split.get(sentence_key(utt.text))
        chosen = {s for s in (s_spk, s_txt) if s is not None}
        if len(chosen) == 1:
            out[chosen.pop()].append(utt)
        else:
            leftovers.append(
                QuarantineRecord(
                    id=utt.id,
                    field="split",
                    reason="cross_split",
                    detail=f"speaker is in {s_spk}, sentence is in {s_txt}; held out of every split",
                    source=utt.audio_filepath,
                    text=utt.text,
                )
            )
    return out, leftovers
