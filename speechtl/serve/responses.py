"""OpenAI's transcription response bodies from a :class:`~speechtl.runtimes.transcript.Transcript`:
verbose_json, SubRip and WebVTT subtitles, and the usage block."""

from __future__ import annotations

import math
from typing import Any

from speechtl.runtimes.transcript import Transcript

LANGUAGE_NAMES = (  # Whisper's codes -> the names OpenAI's verbose_json gives
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese "
    "tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi "
    "fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish "
    "hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin "
    "mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian "
    "az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
    "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi "
    "pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan ka:georgian "
    "be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese "
    "ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish my:myanmar "
    "bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir "
    "jw:javanese su:sundanese yue:cantonese")
LANGUAGES = dict(item.split(":") for item in LANGUAGE_NAMES.split())


def usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(transcript.duration_s)}


def verbose_json(transcript: Transcript, granularities: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """OpenAI's verbose_json body; segments unless only "word" granularity is asked, words when asked."""
    language = LANGUAGES.get(transcript.language, transcript.language).replace("_", " ")
    body: dict[str, Any] = {"task": "transcribe", "language": language, "duration": round(transcript.duration_s, 3),
                            "text": transcript.text}
    if not granularities or "segment" in granularities:
        body["segments"] = [{**vars(s), "tokens": list(s.tokens)} for s in transcript.segments]
    if "word" in granularities:
        body["words"] = [vars(w) for w in transcript.words or ()]
    body["usage"] = usage(transcript)
    return body


def _clock(seconds: float, sep: str) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def subtitles(transcript: Transcript, fmt: str) -> str:
    """SubRip (``fmt="srt"``) or WebVTT (``"vtt"``) text, one cue per segment."""
    sep = "," if fmt == "srt" else "."
    cues = [(f"{i}\n" if fmt == "srt" else "") + f"{_clock(s.start, sep)} --> {_clock(s.end, sep)}\n{s.text.strip()}\n"
            for i, s in enumerate(transcript.segments, start=1)]
    return ("WEBVTT\n\n" if fmt == "vtt" else "") + "\n".join(cues)
