"""The Spanish Asterisk IVR prompts: real telephony speech from Debian packages.

Audio: ``asterisk-core-sounds-es-g722`` (16 kHz G.722, one female speaker,
``/usr/share/asterisk/sounds/es_MX_f_Allison``). Texts:
``asterisk-core-sounds-es`` (``core-sounds-es.txt.gz``, ``id: text`` lines).

The texts are messy the way real corpora are, and every case is handled on
purpose here, each with the evidence for it:

- ids that do not match a file name (case, a stray suffix, a duplicated id)
  are renamed by ``ID_RENAMES`` / ``DUPLICATE_IDS``;
- accents the writers left out (``numero``, ``contrasena``) are restored by
  ``ACCENTS`` (checked against Debian's ``wspanish`` word list), with one
  context rule for ``esta``/``está``;
- typos (``ingese``, ``nimbre``) are corrected by ``TYPOS``;
- prompts whose spoken form the text does not determine (spelled letters,
  ``a.m.``, a web address) are excluded with a reason by ``EXCLUDE``;
- bracketed non-speech (``[tono simple]``) is left to the text normalizer,
  which drops it and rejects a prompt with nothing else as ``non_speech``
  (checked by ear with Whisper on ``vm-tempgreetactive``: the bracketed word
  ``[temporales]`` is not spoken);
- audio with no text, and the ``silence/`` files, are yielded so that they
  reach the quarantine with their reason.

Other voices of the same prompts (``read(voice=...)``, a recipe's
``options: {voice: es-co}``; :data:`VOICES`) take their texts from the same
``core-sounds-es.txt`` by prompt id only. ``es-co`` is Debian's
``asterisk-prompt-es-co`` (Colombian female speaker July E. Jiménez, recorded
by Avatar Ltda in 2006, GPL-2, 285 GSM 8 kHz files): a held-out speaker. It
conflicts with ``asterisk-core-sounds-es``, so ``scripts/system-deps.sh``
extracts its .deb into the speechtl cache instead of installing it. Its file
names are the core prompt ids (same case, same ``digits/`` folder): 268 of the
285 map to a text (with the same ``ID_RENAMES``/``DUPLICATE_IDS``, e.g.
``digits/10``); the 17 others (``digits/h-21``..``h-29``, ``dollar``,
``percent``, ``transfer2``, ...) have no text and reach the quarantine as
``missing_transcript``. Texts of prompts this speaker never recorded are not
items. The recordings are older than the core texts and worded by another
script ("presione uno" for "marque uno"), so an id may say other words than its
text; that is checked later, with a model (``verify_transcripts``), not here.
Cardinal numbers, months and weekdays (:data:`FIXED_WORDING`) are worded by
their id in any voice and are marked ``wording_fixed_by_id``.

Digits in the texts are verbalized by the normalizer. Some prompts say more
than their text (``Marque 1`` is spoken ``marque el número uno``); the corpus
gives no better transcript, so those stay as they are: part of why the
unadapted baseline scores badly on this set.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from speechtl.cache import cache_root
from speechtl.data.importers import CorpusError
from speechtl.data.manifest import RawItem

log = logging.getLogger(__name__)

NAME = "asterisk"
DEFAULT_ROOT = Path("/usr/share/asterisk/sounds/es_MX_f_Allison")
DEFAULT_TEXTS = Path("/usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz")
SPEAKER = "es_MX_f_Allison"
TEXTS_SOURCE = "core-sounds-es.txt by prompt id"
AUDIO_EXTENSIONS = (".g722", ".wav", ".gsm", ".ulaw", ".alaw", ".sln16")

# Text ids that name no audio file, and the file they transcribe.
ID_RENAMES = {
    "digits/1f": "digits/1F",  # file names are upper case
    "digits/1m": "digits/1M",
    "digits/21-and": "digits/20-and",  # "veinti"; the file is 20-and, no 21-and exists
    "confbridge-lock-out-0": "confbridge-lock-out",  # Whisper hears the text on this file
}
# (id, text) of a repeated id -> the file it really transcribes.
DUPLICATE_IDS = {("digits/0", "diez"): "digits/10"}  # digits/10 has audio and no text

TYPOS = {
    "ingese": "ingrese",
    "nimbre": "nombre",
    "numbre": "nombre",
    "defeto": "defecto",
    "introdusca": "introduzca",
    "entidade": "entidades",
    "mesaje": "mensaje",
    "atravez": "a través",
    "paracambiar": "para cambiar",
    "demonstracion": "demostración",
    "contrasenia": "contraseña",
    "trés": "tres",
    "ó": "o",
}

# Unaccented spellings in the texts -> the correct word. Built from the
# corpus vocabulary: every word whose accented form is the only one in
# wspanish, plus inflected forms wspanish lacks, each checked by hand.
ACCENTS = {
    word.split(":")[0]: word.split(":")[1]
    for word in """
    numero:número numeros:números extension:extensión contrasena:contraseña contrasenas:contraseñas
    autenticacion:autenticación ultimo:último opcion:opción invalida:inválida invalido:inválido
    invalidos:inválidos unica:única conexion:conexión codigo:código tambien:también
    configuracion:configuración telefono:teléfono fisico:físico proposito:propósito despues:después
    informacion:información tecnica:técnica util:útil demostracion:demostración numerico:numérico
    rapidamente:rápidamente atras:atrás reproduccion:reproducción dieciseis:dieciséis veintidos:veintidós
    veintitres:veintitrés veintiseis:veintiséis miercoles:miércoles sabado:sábado decimo:décimo
    undecimo:undécimo duodecimo:duodécimo septimo:séptimo vigesimo:vigésimo trigesimo:trigésimo
    millon:millón manana:mañana busqueda:búsqueda exclamacion:exclamación japon:japón maria:maría
    victor:víctor buzon:buzón linea:línea proximo:próximo cortes:cortés telefonico:telefónico
    duracion:duración introduccion:introducción menu:menú lider:líder vacias:vacías unira:unirá
    uniran:unirán comenzara:comenzará escucharas:escucharás esten:estén intentare:intentaré
    ayudaran:ayudarán navegara:navegará digitos:dígitos tendra:tendrá ingresara:ingresará
    grabacion:grabación dolares:dólares dolar:dólar guiare:guiaré minimos:mínimos comprendi:comprendí
    estan:están estandar:estándar valido:válido mas:más identificacion:identificación
    """.split()
}
# "esta" is a demonstrative ("esta persona") unless a verb reading follows.
ESTA_VERB_NEXT = {
    "disponible", "libre", "en", "usted", "ocupada", "ocupado", "configurado", "fuera", "usando", "a",
    "terriblemente", "ahora",
}

SPELLED = "the spoken form of {what} is not given by the text (letter names and readings vary by region)"
EXCLUDE = {
    "digits/a-m": ("spelled_abbreviation", SPELLED.format(what="'a.m.'")),
    "digits/p-m": ("spelled_abbreviation", SPELLED.format(what="'p.m.'")),
    "spy-h323": ("spelled_abbreviation", SPELLED.format(what="'h-323'")),
    "demo-moreinfo": ("unverifiable_reading", SPELLED.format(what="the web address 'www.asterisk.org'")),
}



@dataclass(frozen=True)
class Voice:
    """One recorded voice of the Asterisk prompts."""

    speaker: str  # RawItem.speaker of every item
    package: str  # the Debian package holding the audio (for error messages)
    system_root: Path | None = None  # where apt installs the audio, or None
    cache_subdir: str | None = None  # else: the audio folder under cache_root(), as system-deps.sh extracts it
    core: bool = False  # the voice the texts were written for: every text is an item, audio or not


VOICES = {
    SPEAKER: Voice(speaker=SPEAKER, package="asterisk-core-sounds-es-g722", system_root=DEFAULT_ROOT, core=True),
    "es-co": Voice(
        speaker="es_CO_f_July",
        package="asterisk-prompt-es-co",
        cache_subdir="debian/asterisk-prompt-es-co/usr/share/asterisk/sounds/es",
    ),
}
DEFAULT_VOICE = SPEAKER


def _voice(voice: str) -> Voice:
    if voice not in VOICES:
        raise ValueError(f"asterisk: unknown voice {voice!r}; known voices: {', '.join(VOICES)}")
    return VOICES[voice]


def default_root(voice: str = DEFAULT_VOICE) -> Path:
    """The audio folder of ``voice`` (a key of :data:`VOICES`), resolved now (the cache may move)."""
    spec = _voice(voice)
    if spec.system_root is not None:
        return spec.system_root
    assert spec.cache_subdir is not None
    return cache_root() / spec.cache_subdir


# Prompts whose words the id dictates in any voice (a cardinal number, a month, a weekday), unlike the
# prompts each voice's script words its own way ("marque uno" / "presione uno"): a transcript check that
# disagrees on these heard the recording badly, it did not find another text.
FIXED_WORDING = re.compile(r"^digits/(\d+|mon-\d+|day-\d+)$")

_WORD = re.compile(r"[^\W\d_]+")


def _match_case(word: str, replacement: str) -> str:
    if word.isupper() and len(word) > 1:
        return replacement.upper()
    if word[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def restore(text: str) -> str:
    """Correct the typos and missing accents of an Asterisk prompt text."""
    tokens = _WORD.split(text)
    words = _WORD.findall(text)
    out = [tokens[0]]
    for i, word in enumerate(words):
        low = word.lower()
        fixed = TYPOS.get(low) or ACCENTS.get(low)
        if low == "esta" and i + 1 < len(words) and words[i + 1].lower() in ESTA_VERB_NEXT:
            fixed = "está"
        out.append(_match_case(word, fixed) if fixed else word)
        out.append(tokens[i + 1])
    return "".join(out)


def _read_texts(path: Path) -> list[tuple[int, str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            if ":" not in line:
                raise CorpusError(f"{path}:{line_no}: expected 'id: text', got {line!r}")
            prompt_id, text = line.split(":", 1)
            rows.append((line_no, prompt_id.strip(), text.strip()))
    return rows


def _audio_files(root: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.suffix in AUDIO_EXTENSIONS and path.is_file():
            files.setdefault(path.relative_to(root).with_suffix("").as_posix(), path)
    return files


def detect(root: Path) -> bool:
    root = Path(root)
    return (root / "digits").is_dir() and any(root.glob("vm-*.*")) and any(root.glob("conf-*.*"))


def _check_root(root: Path, voice: str, spec: Voice) -> None:
    if not root.is_dir():
        raise FileNotFoundError(
            f"asterisk: the audio folder {root} of voice {voice!r} is missing: it comes from the Debian package "
            f"{spec.package}; run `make setup` (scripts/system-deps.sh) to get it, or pass root=PATH"
        )
    for name, other in VOICES.items():
        if other is not spec and other.system_root is not None and root == other.system_root:
            raise ValueError(
                f"asterisk: root {root} holds voice {name!r}, not {voice!r}; pass root=None "
                f"(or asterisk.default_root({voice!r})) to read voice {voice!r}"
            )


def read(
    root: Path | str | None = None,
    texts: Path | str | None = None,
    voice: str = DEFAULT_VOICE,
    **_: object,
) -> Iterator[RawItem]:
    """Yield the prompts of ``voice`` (a key of :data:`VOICES`) found in ``root``.

    ``root=None`` is the voice's :func:`default_root`. For the core voice every
    text is an item, with its audio or without; for another voice only the texts
    with audio of that voice are items. Audio with no text is always an item
    (``transcript_missing``), to reach the quarantine.
    """
    spec = _voice(voice)
    root = Path(root) if root is not None else default_root(voice)
    _check_root(root, voice, spec)
    texts_path = Path(texts) if texts is not None else DEFAULT_TEXTS
    if not texts_path.is_file():
        raise FileNotFoundError(
            f"asterisk: the prompt texts {texts_path} are missing: apt-get install asterisk-core-sounds-es "
            "(or pass texts=PATH)"
        )
    audio = _audio_files(root)
    voice_extra = {} if spec.core else {"voice": voice, "texts_source": TEXTS_SOURCE}
    seen: dict[str, int] = {}
    unrecorded = 0
    for line_no, raw_id, raw_text in _read_texts(texts_path):
        prompt_id = ID_RENAMES.get(raw_id, raw_id)
        if prompt_id in seen:
            renamed = DUPLICATE_IDS.get((raw_id, raw_text))
            if renamed is None:
                raise CorpusError(f"{texts_path}:{line_no}: id {raw_id!r} repeats line {seen[prompt_id]}")
            prompt_id = renamed
        seen[prompt_id] = line_no
        if not spec.core and prompt_id not in audio:
            unrecorded += 1  # a prompt this speaker never recorded: not an item
            continue
        extra = {"raw_text": raw_text, "raw_id": raw_id, "texts_line": line_no, **voice_extra}
        if voice_extra and FIXED_WORDING.match(prompt_id):
            extra["wording_fixed_by_id"] = True
        if prompt_id in EXCLUDE:
            reason, detail = EXCLUDE[prompt_id]
            extra["reject"] = {"field": "text", "reason": reason, "detail": detail}
        elif prompt_id.startswith("letters/") and len(raw_text) == 1:
            extra["reject"] = {"field": "text", "reason": "spelled_letter", "detail": SPELLED.format(what=raw_text)}
        yield RawItem(
            id=prompt_id,
            text=restore(raw_text),
            speaker=spec.speaker,
            audio_path=audio.pop(prompt_id, None),
            extra=extra,
        )
    if unrecorded:
        log.info("asterisk: voice %r has no audio for %d of the texts of %s", voice, unrecorded, texts_path)
    for prompt_id, path in audio.items():  # audio the texts never mention
        extra: dict[str, object] = {"transcript_missing": True, **voice_extra}
        if prompt_id.startswith("silence/"):
            extra["reject"] = {"field": "audio", "reason": "non_speech", "detail": "a silence prompt"}
        yield RawItem(id=prompt_id, text="", speaker=spec.speaker, audio_path=path, extra=extra)
