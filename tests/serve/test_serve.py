"""speechtl serve: a real uvicorn server on 127.0.0.1, driven through the official ``openai`` client.

API-shape and error tests run a fake backend (fixed text and segments, serve_harness.py); the tiny random
Whisper runs through the transformers backend and, converted to CTranslate2, through faster-whisper. The
limits (upload decoding, abandoned requests, timeouts) are tested in test_limits.py, the OpenAPI document in
test_openapi.py.
"""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_harness import (  # noqa: E402
    ERROR_KEYS,
    KEY,
    MODEL,
    TEXT,
    FakeBackend,
    api_error,
    call,
    client,
    raw,
    running,
    wav_bytes,
)

from speechtl.runtimes import FasterWhisper, Transformers, load_runtime  # noqa: E402
from speechtl.runtimes.transcript import RequestError  # noqa: E402
from speechtl.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def fake():
    return FakeBackend()


@pytest.fixture(scope="module")
def port(fake):
    app = create_app(fake, api_key=KEY, model_id=MODEL, max_upload_bytes=200_000, max_duration_s=5.0, queue_size=4)
    with running(app) as p:
        yield p


@pytest.fixture()
def wav(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(wav_bytes(1.0))
    return path


# ------------------------------------------------------------------ the API's answers


def test_json_text_and_audio_reaches_backend_as_16k_mono(port, fake, wav):
    with open(wav, "rb") as f:
        result = client(port).audio.transcriptions.create(model=MODEL, file=f)
    assert result.text == TEXT
    assert fake.calls[-1] == {"num_samples": 16000, "dtype": "float32", "language": None, "prompt": None,
                              "temperature": 0.0, "words": False, "hotwords": None}
    stereo = ("stereo.wav", wav_bytes(1.0, rate=44100, channels=2), "audio/wav")  # downmixed, resampled
    assert client(port).audio.transcriptions.create(model=MODEL, file=stereo, response_format="json").text == TEXT
    assert abs(fake.calls[-1]["num_samples"] - 16000) <= 2


def test_digital_silence_is_transcribed_not_rejected(port, fake):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, np.float32), 16000, format="WAV", subtype="PCM_16")
    silence = ("silence.wav", buf.getvalue(), "audio/wav")
    assert client(port).audio.transcriptions.create(model=MODEL, file=silence).text == TEXT
    assert fake.calls[-1]["num_samples"] == 8000


def test_text_format(port, wav):
    with open(wav, "rb") as f:
        result = client(port).audio.transcriptions.create(model=MODEL, file=f, response_format="text")
    assert isinstance(result, str) and result.strip() == TEXT


def test_verbose_json_passes_options_and_has_openai_fields(port, fake, wav):
    with open(wav, "rb") as f:
        result = client(port).audio.transcriptions.create(
            model=MODEL, file=f, response_format="verbose_json", language="es", prompt="hola", temperature=0.4)
    assert fake.calls[-1]["language"] == "es" and fake.calls[-1]["prompt"] == "hola"
    assert fake.calls[-1]["temperature"] == pytest.approx(0.4)
    body = result.model_dump(exclude_none=True)
    assert body["language"] == "spanish" and body["duration"] == pytest.approx(1.0) and body["text"] == TEXT
    assert [s["text"] for s in body["segments"]] == [" hello world", " second part"]
    seg = body["segments"][1]
    assert set(seg) >= {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                        "compression_ratio", "no_speech_prob"}
    assert (seg["id"], seg["seek"], seg["start"], seg["end"], seg["tokens"]) == (1, 50, 0.5, 1.0, [13, 14])
    assert "words" not in body


def test_word_granularity(port, fake, wav):
    with open(wav, "rb") as f:
        result = client(port).audio.transcriptions.create(
            model=MODEL, file=f, response_format="verbose_json", timestamp_granularities=["word"])
    assert fake.calls[-1]["words"] is True
    assert [(w.word, w.start, w.end) for w in result.words] == [(" hello", 0.0, 0.2), (" world", 0.2, 0.5)]
    assert not result.segments  # only what was asked for, as OpenAI does


def test_srt_and_vtt(port, wav):
    c = client(port)
    with open(wav, "rb") as f:
        srt = c.audio.transcriptions.create(model=MODEL, file=f, response_format="srt")
    assert srt == ("1\n00:00:00,000 --> 00:00:00,500\nhello world\n\n"
                   "2\n00:00:00,500 --> 00:00:01,000\nsecond part\n")
    with open(wav, "rb") as f:
        vtt = c.audio.transcriptions.create(model=MODEL, file=f, response_format="vtt")
    assert vtt == "WEBVTT\n\n00:00:00.000 --> 00:00:00.500\nhello world\n\n00:00:00.500 --> 00:00:01.000\nsecond part\n"


def test_models_and_health(port):
    models = client(port).models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [(MODEL, "model", "speechtl")]
    assert isinstance(models.data[0].created, int)
    status, body = raw(port, "/health", key=None)  # no key needed
    assert status == 200 and json.loads(body)["status"] == "ok"


# ------------------------------------------------------------------ errors


def test_400_bad_parameters(port, wav):
    with pytest.raises(openai.BadRequestError) as info, open(wav, "rb") as f:
        client(port).audio.transcriptions.create(model=MODEL, file=f, response_format="xml")
    assert api_error(info, 400)["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as info, open(wav, "rb") as f:
        client(port).audio.transcriptions.create(model=MODEL, file=f, temperature=1.5)
    assert api_error(info, 400)["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as info, open(wav, "rb") as f:  # granularities need verbose_json
        client(port).audio.transcriptions.create(model=MODEL, file=f, timestamp_granularities=["word"])
    assert api_error(info, 400)["param"] == "timestamp_granularities[]"
    # FastAPI's own 422 validation errors come back as 400 in OpenAI's shape
    status, body = raw(port, "/v1/audio/transcriptions", fields={"model": MODEL})
    assert status == 400 and json.loads(body)["error"]["param"] == "file"
    assert json.loads(body)["error"]["code"] == "missing_required_parameter"
    status, body = raw(port, "/v1/audio/transcriptions", fields={"model": MODEL, "temperature": "hot"},
                       files={"file": ("clip.wav", wav.read_bytes(), "audio/wav")})
    assert status == 400 and json.loads(body)["error"]["param"] == "temperature"
    status, body = raw(port, "/v1/audio/transcriptions", files={"file": ("clip.wav", wav.read_bytes(), "audio/wav")})
    assert status == 400 and json.loads(body)["error"]["param"] == "model"


def test_400_undecodable_audio(port):
    with pytest.raises(openai.BadRequestError) as info:
        client(port).audio.transcriptions.create(model=MODEL,
                                                 file=("clip.wav", b"RIFF but not audio", "audio/wav"))
    error = api_error(info, 400)
    assert error["param"] == "file" and "clip.wav" in error["message"] and "speechtl-serve-" not in error["message"]


def test_401_wrong_or_missing_key(port, wav):
    with pytest.raises(openai.AuthenticationError) as info, open(wav, "rb") as f:
        client(port, key="sk-wrong").audio.transcriptions.create(model=MODEL, file=f)
    assert api_error(info, 401)["code"] == "invalid_api_key"
    status, body = raw(port, "/v1/models", key=None)
    assert status == 401 and set(json.loads(body)["error"]) == ERROR_KEYS
    status, _ = raw(port, "/v1/audio/transcriptions", fields={"model": MODEL},
                    files={"file": ("clip.wav", wav.read_bytes(), "audio/wav")}, key=None)
    assert status == 401


@pytest.mark.parametrize("seconds,rate,code", [
    (10.0, 16000, "request_too_large"),  # 320 kB body: refused from Content-Length before the form is read
    (7.0, 16000, "request_too_large"),  # 224 kB file in a body within the form slack: refused after parsing
    (6.0, 8000, "audio_too_long"),  # 96 kB (under the upload limit) but 6 s > 5 s
])
def test_413_upload_and_duration_limits(port, seconds, rate, code):
    upload = ("long.wav", wav_bytes(seconds, rate=rate), "audio/wav")
    with pytest.raises(openai.APIStatusError) as info:
        client(port).audio.transcriptions.create(model=MODEL, file=upload)
    assert api_error(info, 413)["code"] == code


@pytest.mark.parametrize("upload", [("notes.txt", b"hello there", "text/plain"),
                                    ("clip.wav", b"hello there", "text/plain"),
                                    ("setup.exe", b"MZ\x90\x00", "application/octet-stream")])
def test_415_not_audio(port, upload):
    with pytest.raises(openai.APIStatusError) as info:
        client(port).audio.transcriptions.create(model=MODEL, file=upload)
    assert api_error(info, 415)["param"] == "file"


def test_404_in_openai_shape(port):
    status, body = raw(port, "/v1/nothing")
    assert status == 404 and set(json.loads(body)["error"]) == ERROR_KEYS


def test_a_model_other_than_the_served_one_is_openais_404(port, wav):
    with open(wav, "rb") as f, pytest.raises(openai.NotFoundError) as caught:
        client(port).audio.transcriptions.create(model="whisper-1", file=f)
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model" and MODEL in error["message"]


def test_503_when_queue_full_and_loop_stays_free():
    gate = threading.Event()
    backend = FakeBackend(gate)
    app = create_app(backend, api_key=KEY, queue_size=1, model_id=MODEL)
    upload = ("clip.wav", wav_bytes(0.5), "audio/wav")
    with running(app) as p, ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(client(p).audio.transcriptions.create, model=MODEL, file=upload)
            assert backend.started.wait(20)  # the first request is in the model, blocked
            second = pool.submit(client(p).audio.transcriptions.create, model=MODEL, file=upload)
            deadline = time.monotonic() + 20
            while True:  # the event loop still answers while a transcription runs
                health = json.loads(raw(p, "/health", key=None)[1])
                if (health["running"], health["waiting"]) == (1, 1):
                    break
                assert time.monotonic() < deadline, health
                time.sleep(0.02)
            with pytest.raises(openai.APIStatusError) as info:
                client(p).audio.transcriptions.create(model=MODEL, file=upload)
            error = api_error(info, 503)
            assert error["type"] == "server_error" and info.value.response.headers["retry-after"] == "1"
        finally:
            gate.set()
        assert first.result(timeout=30).text == TEXT and second.result(timeout=30).text == TEXT
        assert len(backend.calls) == 2
        assert json.loads(raw(p, "/health", key=None)[1])["waiting"] == 0


# ------------------------------------------------------------------ backends


class _FakeAsr:
    """A CtcASR stand-in: records the windows it gets."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def transcribe(self, audios, lang, *, prompt=None, batch_size=8):
        self.lengths = [len(a) for a in audios]
        return [f"window {i}" for i in range(len(audios))]


def test_transformers_backend_cuts_long_audio_into_30s_windows():
    asr = _FakeAsr()
    backend = Transformers(asr, "ctc", language="es")
    result = backend.transcript(np.zeros(65 * 16000, np.float32))
    assert len(asr.lengths) == 3 and max(asr.lengths) <= 30 * 16000 and sum(asr.lengths) == 65 * 16000
    assert [s.text for s in result.segments] == [" window 0", " window 1", " window 2"]
    assert result.text == "window 0 window 1 window 2" and result.language == "es"
    assert result.segments[0].start == 0.0 and result.segments[-1].end == pytest.approx(65.0)
    assert result.segments[1].start == result.segments[0].end > 29.9  # silence throughout: cut near the limit
    with pytest.raises(RequestError):
        backend.transcript(np.zeros(16000, np.float32), prompt="not for CTC")
    with pytest.raises(RequestError):
        backend.transcript(np.zeros(16000, np.float32), word_timestamps=True)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from speechtl.models.random_whisper import save_random_whisper

    return save_random_whisper(tmp_path_factory.mktemp("serve") / "tiny", seed=0)


def test_real_tiny_whisper_transformers_backend(tiny_whisper, wav):
    backend = load_runtime(tiny_whisper)
    assert isinstance(backend, Transformers) and backend.kind == "seq2seq"
    with running(create_app(backend, model_id=MODEL)) as p:
        c = client(p, key="anything")  # no key set: any key is accepted
        with open(wav, "rb") as f:
            result = c.audio.transcriptions.create(model=MODEL, file=f, response_format="verbose_json", language="en")
        assert isinstance(result.text, str) and result.language == "english"
        assert result.duration == pytest.approx(1.0)
        [segment] = result.segments  # one segment covering the clip
        assert (segment.start, segment.end) == (0.0, pytest.approx(1.0))
        assert all(isinstance(t, int) for t in segment.tokens)
        with open(wav, "rb") as f:  # no language: detected
            detected = c.audio.transcriptions.create(model=MODEL, file=f, response_format="verbose_json")
        assert isinstance(detected.language, str) and detected.language
        with pytest.raises(openai.BadRequestError) as info, open(wav, "rb") as f:
            c.audio.transcriptions.create(model=MODEL, file=f, language="xx")
        assert api_error(info, 400)["param"] == "language"


def test_real_tiny_whisper_ct2_on_faster_whisper(tiny_whisper, tmp_path, wav):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("ctranslate2")
    import ctranslate2

    from speechtl.export.formats import export_ct2

    ct2 = export_ct2(tiny_whisper, tmp_path / "ct2", "float32")
    assert isinstance(load_runtime(ct2, compute_type="float32"), FasterWhisper)
    # the requests sample (temperature > 0) from a random model: seeded, or whether a segment lands inside the
    # 1-s clip is luck
    ctranslate2.set_random_seed(0)
    backend = FasterWhisper(ct2, compute_type="float32", beam_size=1)
    with running(create_app(backend, api_key=KEY, model_id=MODEL)) as p:
        with open(wav, "rb") as f:
            result = client(p).audio.transcriptions.create(
                model=MODEL, file=f, response_format="verbose_json", language="en", temperature=0.5,
                timestamp_granularities=["segment", "word"])
        assert isinstance(result.text, str) and result.language == "english"
        assert result.duration == pytest.approx(1.0) and result.segments
        for s in result.segments:
            # the audio is padded to a 30-s window for decoding: nothing is reported past its 1 s
            assert 0.0 <= s.start <= s.end <= 1.0 and isinstance(s.avg_logprob, float) and s.avg_logprob <= 0.0
            assert 0.0 <= s.no_speech_prob <= 1.0 and s.compression_ratio >= 0.0
            assert s.temperature == pytest.approx(0.5)  # a non-zero temperature is used as given (no fallback)
            assert all(isinstance(t, int) for t in s.tokens)
        assert isinstance(result.words, list) and all(w.end <= 1.0 for w in result.words)
        with open(wav, "rb") as f:
            srt = client(p).audio.transcriptions.create(model=MODEL, file=f, response_format="srt", temperature=1)
        assert srt.startswith("1\n00:00:00,000 --> ")


def test_hotwords_go_with_every_request_unless_turned_off(wav):
    fake = FakeBackend()
    with running(create_app(fake, api_key=KEY, model_id=MODEL, hotwords="ibuprofeno, amoxicilina")) as p:
        with open(wav, "rb") as f:
            client(p).audio.transcriptions.create(model=MODEL, file=f, prompt="hola")
        assert fake.calls[-1]["hotwords"] == "ibuprofeno, amoxicilina" and fake.calls[-1]["prompt"] == "hola"
        with open(wav, "rb") as f:
            client(p).audio.transcriptions.create(model=MODEL, file=f, extra_body={"hotwords": "false"})
        assert fake.calls[-1]["hotwords"] is None
        status, body, _ = call(p, "/health", key=None)
        assert status == 200 and json.loads(body)["hotwords"] == "ibuprofeno, amoxicilina"


def test_served_hotwords_come_from_the_terms_file_or_the_runs_kept_prompt(tmp_path):
    from speechtl.serve.hotwords import served_hotwords

    model = tmp_path / "runs/es-medical/export/ct2"
    model.mkdir(parents=True)
    assert served_hotwords(model) is None  # not a run's export
    run = {"prompting": {"kept": True, "text": "ibuprofeno, amoxicilina"}}
    (model / "speechtl_run.json").write_text(json.dumps(run), encoding="utf-8")
    assert served_hotwords(model) == "ibuprofeno, amoxicilina"
    (model / "speechtl_run.json").write_text(json.dumps({"prompting": {"kept": False, "text": "x"}}), encoding="utf-8")
    assert served_hotwords(model) is None  # dev data did not keep the prompt
    terms = tmp_path / "terms.txt"
    terms.write_text("# cardiology\nstent\nbypass\n", encoding="utf-8")
    assert served_hotwords(model, terms) == "stent, bypass"


def test_the_default_model_id_is_the_runs_name(tmp_path):
    from speechtl.serve.app import default_model_id

    assert default_model_id(tmp_path / "runs/es-medical/export/ct2") == "es-medical"
    assert default_model_id(tmp_path / "runs/es/checkpoints/interpolated") == "es"
    assert default_model_id(tmp_path / "models/my-whisper") == "my-whisper"


def test_cli_parses_serve():
    from speechtl.cli import build_parser, cmd_serve

    args = build_parser().parse_args(["serve", "--model", "runs/es/export/ct2", "--port", "9000", "--api-key", "k"])
    assert args.func is cmd_serve and (args.host, args.port, args.api_key) == ("127.0.0.1", 9000, "k")
    assert (args.compute_type, args.queue_size, args.max_upload_mb) == ("int8", 8, 25.0)
    timeouts = build_parser().parse_args(["serve", "--model", "m", "--body-timeout-s", "5", "--header-timeout-s", "2"])
    assert (timeouts.body_timeout_s, timeouts.upload_timeout_s, timeouts.header_timeout_s) == (5.0, 600.0, 2.0)


def test_evaluation_decodes_with_the_clip_beam_width(tiny_whisper, tmp_path):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("ctranslate2")
    from speechtl.export.formats import export_ct2

    backend = FasterWhisper(export_ct2(tiny_whisper, tmp_path / "ct2", "float32"), compute_type="float32")
    real, widths = backend.model.transcribe, []

    def spy(audio, **kwargs):
        widths.append(kwargs["beam_size"])
        return real(audio, **kwargs)

    backend.model.transcribe = spy
    clip = np.zeros(8000, np.float32)
    backend.transcribe([clip], "en")
    backend.clip_beams = 2  # what a parity check sets from the run's eval.num_beams
    backend.transcribe([clip], "en")
    assert widths == [1, 2]


def test_hotwords_leave_the_decoder_room_after_a_long_prompt(tiny_whisper, tmp_path):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("ctranslate2")
    from speechtl.export.formats import export_ct2

    backend = FasterWhisper(export_ct2(tiny_whisper, tmp_path / "ct2", "float32"), compute_type="float32",
                            beam_size=1, language="en")
    limit = backend.model.max_length // 2 - 1
    terms = " ".join(f"term{i}" for i in range(400))  # far over Whisper's prompt on its own
    per_word = len(backend._tokens("palabra"))  # the tokenizer of the random model is not Whisper's
    prompt = " ".join(["palabra"] * (limit // per_word // 2))
    fitted = backend.fit_hotwords(terms, prompt)
    assert fitted and terms.startswith(fitted)
    assert len(backend._tokens(fitted)) + len(backend._tokens(prompt)) <= limit  # as many as fit, no more
    one_more = " ".join(terms.split()[:len(fitted.split()) + 1])
    assert len(backend._tokens(one_more)) + len(backend._tokens(prompt)) > limit
    assert backend.fit_hotwords("amoxicilina ibuprofeno", None) == "amoxicilina ibuprofeno"
    assert backend.fit_hotwords("  ", None) is None
    long_prompt = " ".join(["palabra"] * (limit // per_word + 2))  # fills Whisper's prompt alone
    assert backend.fit_hotwords(terms, long_prompt) is None
    real, calls = backend.model.transcribe, []

    def spy(audio, **kwargs):
        calls.append(kwargs)
        return real(audio, **kwargs)

    backend.model.transcribe = spy
    clip = np.zeros(16000, np.float32)
    for request_prompt, kept in ((prompt, fitted), (long_prompt, None)):
        # unfitted, faster-whisper puts up to 222 hotword tokens and 223 prompt tokens before the first window:
        # whisper-base then fails past position 448 (a 500 from speechtl serve); the random model stops earlier
        assert isinstance(backend.transcript(clip, prompt=request_prompt, hotwords=terms).text, str)
        assert calls[-1]["hotwords"] == kept and calls[-1]["condition_on_previous_text"] is (kept is None)
    backend.transcript(clip, hotwords="amoxicilina")  # hotwords replace the previous window's text as prompt
    assert calls[-1]["hotwords"] == "amoxicilina" and calls[-1]["condition_on_previous_text"] is False
    backend.transcript(clip)
    assert calls[-1]["hotwords"] is None and calls[-1]["condition_on_previous_text"] is True
