"""espeak-ng voices: many languages, robotic. A voice is a variant (``-v es+m3``), a speed (``-s``), a
pitch (``-p``) and a word gap (``-g``), seeded; its audio comes from ``espeak-ng --stdout``."""

from __future__ import annotations

import logging
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from speechtl.data.synth import SynthError, Voice

log = logging.getLogger(__name__)

# espeak-ng variants that sound like people (no robots, whispers or heavy echo), by voice gender.
ESPEAK_MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
ESPEAK_FEMALE = ("f1", "f2", "f3", "f4", "f5")
ESPEAK_MALE_EXTRA = (
    "Alex", "Andy", "Denis", "Diogo", "Gene", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael",
    "Mike", "antonio", "david", "ed", "edward", "gustave", "iven", "john", "marcelo", "michel", "miguel",
    "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "travis", "victor",
)
ESPEAK_FEMALE_EXTRA = ("Alicia", "Andrea", "Annie", "aunty", "belinda", "linda", "shelby", "steph")
ESPEAK_SPEED_WPM = (130, 190)  # -s range, words per minute (espeak default 175)
ESPEAK_PITCH = (30, 70)  # -p range, 0-99 (default 50)
ESPEAK_GAP = (0, 3)  # -g range, word gap in units of 10 ms


def executable() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SynthError("synth: the espeak-ng command is not installed (apt-get install espeak-ng)")
    return exe


def variants() -> tuple[list[str], list[str]]:
    """Installed human-sounding espeak-ng variants: (male, female), preferred ones first."""
    out = subprocess.run([executable(), "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Data at:\s*(\S.*)$", out, flags=re.MULTILINE)
    vdir = Path(match.group(1).strip()) / "voices" / "!v" if match else None
    if vdir is None or not vdir.is_dir():
        log.warning("synth: espeak-ng variant folder not found (--version said %r); using m1..m8, f1..f5", out)
        return list(ESPEAK_MALE), list(ESPEAK_FEMALE)
    present = {p.name for p in vdir.iterdir()}
    male = [v for v in ESPEAK_MALE + ESPEAK_MALE_EXTRA if v in present]
    female = [v for v in ESPEAK_FEMALE + ESPEAK_FEMALE_EXTRA if v in present]
    if not male and not female:
        raise SynthError(f"synth: none of the known espeak-ng variants is in {vdir}")
    return male, female


def voices(num_voices: int, seed: int) -> list[Voice]:
    """The ``num_voices`` seeded espeak-ng voices, male and female variants alternating."""
    male, female = variants()
    rng = random.Random(f"espeak:{seed}")

    def ordered(names: list[str], preferred: tuple[str, ...]) -> list[str]:
        first = [n for n in names if n in preferred]
        rest = [n for n in names if n not in preferred]
        rng.shuffle(first)
        rng.shuffle(rest)
        return first + rest

    male, female = ordered(male, ESPEAK_MALE), ordered(female, ESPEAK_FEMALE)
    order = [v for pair in zip(male, female) for v in pair]
    order += male[len(female) :] + female[len(male) :]
    voices: list[Voice] = []
    seen: set[str] = set()
    i = 0
    while len(voices) < num_voices:
        params = {
            "variant": order[i % len(order)],
            "speed_wpm": rng.randint(*ESPEAK_SPEED_WPM),
            "pitch": rng.randint(*ESPEAK_PITCH),
            "word_gap": rng.randint(*ESPEAK_GAP),
        }
        i += 1
        voice_id = f"espeak-{params['variant']}-s{params['speed_wpm']}-p{params['pitch']}-g{params['word_gap']}"
        if voice_id not in seen:
            seen.add(voice_id)
            voices.append(Voice(voice_id, "espeak", params))
    return voices


def synthesize(text: str, voice: Voice, lang: str) -> tuple[np.ndarray, int]:
    p = voice.params
    cmd = [
        executable(), "-v", f"{lang}+{p['variant']}", "-s", str(p["speed_wpm"]), "-p", str(p["pitch"]),
        "-g", str(p["word_gap"]), "--stdout", "--stdin",
    ]  # fmt: skip
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
    message = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or message.startswith("Error"):
        raise SynthError(
            f"synth: espeak-ng failed for voice {voice.id} (lang {lang!r}, exit {proc.returncode}): {message}"
        )
    samples, rate = parse_wav_bytes(proc.stdout)
    if len(samples) == 0:
        raise SynthError(f"synth: espeak-ng gave no audio for voice {voice.id} (lang {lang!r})")
    return samples, rate


def parse_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV bytes -> (float32 mono, rate); tolerates the bogus sizes of a streamed header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SynthError(f"synth: not a WAV stream (starts with {data[:12]!r})")
    pos, rate, channels, bits = 12, None, 1, 16
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag == b"fmt ":
            fmt = data[pos + 8 : pos + 24]
            channels = int.from_bytes(fmt[2:4], "little")
            rate = int.from_bytes(fmt[4:8], "little")
            bits = int.from_bytes(fmt[14:16], "little")
        elif tag == b"data":
            body = data[pos + 8 : pos + 8 + min(size, len(data))]
            if rate is None or bits != 16:
                raise SynthError(f"synth: WAV stream with rate {rate} and {bits} bits; expected 16-bit PCM")
            body = body[: len(body) // (2 * channels) * 2 * channels]
            pcm = np.frombuffer(body, dtype="<i2").reshape(-1, channels).mean(axis=1)
            return (pcm / 32768.0).astype(np.float32), rate
        pos += 8 + size + (size & 1)
    raise SynthError("synth: WAV stream has no data chunk")
