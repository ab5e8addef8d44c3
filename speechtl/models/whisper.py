"""Whisper backend on transformers: features, labels, staged encoder, decoding.

:class:`WhisperASR` wraps a local ``WhisperForConditionalGeneration`` directory
(model + processor + generation config). Everything that decides what the
decoder sees is explicit here rather than left to defaults:

- the decoder prefix is ``<|startoftranscript|><|lang|><|task|><|notimestamps|>``
  for training and for generation alike (:meth:`WhisperASR.prefix_tokens`);
- training labels are the text (with a leading space, as Whisper's own
  transcripts start) after that prefix plus ``<|endoftext|>``; the forced
  prefix positions and the padding are ``-100`` (never learned), and a label
  longer than ``max_label_tokens`` is reported by id, never cut;
- the encoder runs in *stages* (0 = conv stem + positions, 1..L = layers,
  L+1 = final layer norm) so that a frozen prefix can be computed once and
  cached (see :mod:`speechtl.models.encoder_cache`) and the rest run per step.

Random-weight models for tests and benchmarks: :mod:`speechtl.models.random_whisper`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.models.beam_cache import beam_cache, clip_rows_attention, last_position_logits
from speechtl.models.collate import NO_SPEECH, collate_tokens
from speechtl.models.encoder_stages import run_encoder
from speechtl.models.windows import window_groups, window_positions
from speechtl.text.repetition import COMPRESSION_RATIO_LIMIT, compression_ratio

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MAX_AUDIO_S = 30.0  # one Whisper window; longer audio would be cut by the feature extractor
TASKS = ("transcribe", "translate")
TIMESTAMP_STEP_S = 0.02  # Whisper's timestamp tokens: <|0.00|>, <|0.02|>, ... <|30.00|>
SPECIALS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
            "<|notimestamps|>")


def _deps() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(f"the Whisper backend needs {exc.name}: pip install 'speechtl[train]'") from exc
    return torch, transformers


class LabelTooLong(ValueError):
    """Training labels over the token limit; ``items`` holds (id, number of tokens) of every offender."""

    def __init__(self, items: list[tuple[str, int]], limit: int) -> None:
        shown = ", ".join(f"id={i} ({n} tokens)" for i, n in items[:10])
        more = f" and {len(items) - 10} more" if len(items) > 10 else ""
        super().__init__(f"{len(items)} label(s) longer than max_label_tokens={limit}: {shown}{more}")
        self.items = items
        self.limit = limit


# ------------------------------------------------------------------ encoder stages


NO_SPEECH_THRESHOLD = 0.6  # OpenAI's and faster-whisper's defaults for the no-speech rule
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_RULE = "no-speech probability without the prompt and a failed transcript (low log-probability or a loop)"


def token_budget(duration_s: float | None, cap: int = 128) -> int:
    """Decoding limit for speech of ``duration_s``: generous for speech (10 tokens/s), short for loops."""
    if duration_s is None:
        return cap
    return max(16, min(cap, 16 + int(10 * duration_s + 0.999)))


# ------------------------------------------------------------------ the model


class WhisperASR:
    """A Whisper model, its processor and generation config, on one device."""

    def __init__(self, model: Any, processor: Any, generation_config: Any, *,
                 max_label_tokens: int | None = None) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.feature_extractor = processor.feature_extractor
        self.generation_config = complete_generation_config(generation_config, self.tokenizer)
        # generate() reads the model's copy; without max_length, max_new_tokens alone bounds the output
        runtime = copy.deepcopy(self.generation_config)
        runtime.max_length = None
        self.model.generation_config = runtime
        limit = model.config.max_target_positions
        self.max_label_tokens = limit if max_label_tokens is None else int(max_label_tokens)
        if not 4 < self.max_label_tokens <= limit:
            raise ValueError(f"max_label_tokens={max_label_tokens} must be in (4, {limit}] for this model")
        self.eot_id = int(self.tokenizer.convert_tokens_to_ids("<|endoftext|>"))
        self.sot_id = int(self.tokenizer.convert_tokens_to_ids("<|startoftranscript|>"))
        self.no_speech_id = self._token_id("<|nocaptions|>", "<|nospeech|>")  # None: no gate
        self.no_speech_gate = self.no_speech_id is not None
        self.no_timestamps_id = self._token_id("<|notimestamps|>")
        self.num_beams = 1  # the beam width transcribe uses unless told (1 = greedy); eval.num_beams sets it
        # encoder windows sized to the clip while training (models.windows); None: always 30 s
        self.window_step_s: float | None = None

    def _token_id(self, *names: str) -> int | None:
        """The first of ``names`` the tokenizer holds as a token of its own (not unknown, not end of text)."""
        for name in names:
            token = self.tokenizer.convert_tokens_to_ids(name)
            if token is not None and token not in (self.tokenizer.unk_token_id, self.eot_id):
                return int(token)
        return None

    @classmethod
    def load(cls, model_dir: Path | str, device: Any = "cpu", dtype: Any = None, *,
             max_label_tokens: int | None = None) -> WhisperASR:
        """Load model, processor and generation config from a local transformers directory."""
        _, tf = _deps()
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not a transformers model directory (no config.json)")
        model = tf.WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=dtype)
        processor = tf.WhisperProcessor.from_pretrained(model_dir)
        if (model_dir / "generation_config.json").is_file():
            gen = tf.GenerationConfig.from_pretrained(model_dir)
        else:
            gen = tf.GenerationConfig.from_model_config(model.config)
        model.to(device).eval()
        log.info("loaded Whisper from %s (%d encoder + %d decoder layers, d_model %d, vocab %d) on %s",
                 model_dir, model.config.encoder_layers, model.config.decoder_layers, model.config.d_model,
                 model.config.vocab_size, device)
        return cls(model, processor, gen, max_label_tokens=max_label_tokens)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def save(self, out_dir: Path | str, state_dict: dict[str, Any] | None = None) -> None:
        """Write model (optionally from ``state_dict``), processor and generation config to ``out_dir``."""
        out_dir = Path(out_dir)
        runtime, self.model.generation_config = self.model.generation_config, self.generation_config
        try:
            self.model.save_pretrained(out_dir, state_dict=state_dict)
        finally:
            self.model.generation_config = runtime
        self.processor.save_pretrained(out_dir)
        self.generation_config.save_pretrained(out_dir)

    # -------------------------------------------------------------- inputs

    def window_frames(self, durations_s: Sequence[float | None]) -> int:
        """Feature frames of the window that holds the longest of ``durations_s`` (:attr:`window_step_s`)."""
        positions = self.model.config.max_source_positions
        return 2 * max((window_positions(d, self.window_step_s, positions) for d in durations_s), default=positions)

    def batches(self, durations_s: Sequence[float | None], batch_size: int) -> list[list[int]]:
        """Batches of clip positions, each of one encoder window (:func:`speechtl.models.windows.window_groups`)."""
        return window_groups(durations_s, self.window_step_s, batch_size)

    def features(self, audios: Sequence[np.ndarray], *, ids: Sequence[str] | None = None) -> Any:
        """Log-mel features (batch, mels, frames) of 16 kHz float audio, cut to the window of the longest clip
        (3000 frames: 30 s, unless :attr:`window_step_s` is set); audio over 30 s is an error."""
        torch, _ = _deps()
        limit = int(MAX_AUDIO_S * SAMPLE_RATE)
        for i, audio in enumerate(audios):
            if audio.ndim != 1:
                raise ValueError(f"audio id={ids[i] if ids else i}: expected mono 1-D samples, got shape {audio.shape}")
            if len(audio) > limit:
                raise ValueError(f"audio id={ids[i] if ids else i}: {len(audio) / SAMPLE_RATE:.2f} s is over the "
                                 f"{MAX_AUDIO_S:.0f} s Whisper window (split it in data prep)")
        with torch.autocast("cpu", enabled=False):  # the extractor's torch path must stay float32
            out = self.feature_extractor([np.asarray(a, dtype=np.float32) for a in audios],
                                         sampling_rate=SAMPLE_RATE, return_tensors="pt")
        frames = self.window_frames([len(a) / SAMPLE_RATE for a in audios])
        return out.input_features[..., :frames].to(torch.float32)

    def detect_languages(self, audios: Sequence[np.ndarray], batch_size: int = 8) -> list[str]:
        """The language code Whisper detects in each clip, the language not forced (one encoder pass and one
        decoder step a clip)."""
        torch, _ = _deps()
        found: list[str] = []
        for lo in range(0, len(audios), batch_size):
            with torch.no_grad():
                hidden = self.encode(self.features(audios[lo:lo + batch_size]))
            found += self.detect_languages_encoded(hidden)
        return found

    def detect_languages_encoded(self, encoder_hidden_states: Any) -> list[str]:
        """Like :meth:`detect_languages`, from final encoder outputs (batch, positions, d_model): one decoder step."""
        torch, _ = _deps()
        from transformers.modeling_outputs import BaseModelOutput

        hidden = torch.as_tensor(encoder_hidden_states).to(self.device)
        if not torch.is_autocast_enabled(self.device.type):
            hidden = hidden.to(self.model.dtype)
        with torch.no_grad():
            ids = self.model.detect_language(encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                                             generation_config=self.generation_config)
        return [str(t)[2:-2] for t in self.tokenizer.convert_ids_to_tokens(ids.flatten().tolist())]

    def prefix_tokens(self, lang: str, task: str = "transcribe", timestamps: bool = False) -> list[int]:
        """``<|startoftranscript|><|lang|><|task|>`` plus ``<|notimestamps|>`` unless ``timestamps``."""
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one of {TASKS}")
        tokens = ["<|startoftranscript|>", f"<|{lang}|>", f"<|{task}|>"]
        if not timestamps:
            tokens.append("<|notimestamps|>")
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in tokens]
        unk = self.tokenizer.unk_token_id
        for token, token_id in zip(tokens, ids, strict=True):
            if token_id is None or (token_id == unk and token != self.tokenizer.unk_token):
                raise ValueError(f"language {lang!r}: the tokenizer has no token {token}")
        return [int(i) for i in ids]

    def timestamp_token(self, seconds: float) -> int:
        """Whisper's timestamp token for ``seconds`` (0.02-s steps, 0 to 30 s)."""
        step = round(float(seconds) / TIMESTAMP_STEP_S)
        if not 0 <= step * TIMESTAMP_STEP_S <= MAX_AUDIO_S:
            raise ValueError(f"timestamp {seconds} s is outside one {MAX_AUDIO_S:.0f}-s window")
        # the timestamp tokens follow <|notimestamps|> in every Whisper vocabulary (as transformers' and
        # faster-whisper's decoders count them); a tokenizer need not list them by name
        if (self.no_timestamps_id is None
                or self.no_timestamps_id + 1 + round(MAX_AUDIO_S / TIMESTAMP_STEP_S) >= self.model.config.vocab_size):
            raise ValueError("this model's vocabulary has no timestamp tokens")
        return self.no_timestamps_id + 1 + step

    def token_sequences(self, texts: Sequence[str], lang: str, *, ids: Sequence[str] | None = None,
                        task: str = "transcribe", empty_ok: Sequence[bool] | None = None,
                        spans: Sequence[tuple[float, float] | None] | None = None) -> list[list[int]]:
        """Full decoder sequences ``prefix + text + <|endoftext|>``; every over-long one is reported.

        An item with a span ``(start, end)`` in seconds gets a timestamped target instead, as Whisper was
        trained on: ``<|startoftranscript|><|lang|><|task|> <|start|> text <|end|> <|endoftext|>`` (no
        ``<|notimestamps|>``), so fine-tuning keeps the timestamp prediction long-form decoding relies on.

        An empty text is an error unless ``empty_ok`` says so for its item: a clip without speech. Its
        sequence is the prefix and the marker NO_SPEECH, which :func:`collate_tokens` turns into both halves
        of the no-speech rule: ``<|nocaptions|>`` as the label after ``<|startoftranscript|>`` and, after the
        prefix, a uniform target over the vocabulary (no first word is likely, so a forced transcript's mean
        log-probability is far under LOGPROB_THRESHOLD). ``<|endoftext|>`` there would not do: decoding
        suppresses it at the first position and renormalizes, so a model trained on it writes a confident
        word. A tokenizer without a no-speech token gets the prefix and ``<|endoftext|>``.
        """
        prefix = self.prefix_tokens(lang, task)
        ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        empty_ok = list(empty_ok) if empty_ok is not None else [False] * len(texts)
        spans = list(spans) if spans is not None else [None] * len(texts)
        if not len(ids) == len(texts) == len(empty_ok) == len(spans):
            raise ValueError(f"{len(texts)} texts but {len(ids)} ids, {len(empty_ok)} empty_ok flags and "
                             f"{len(spans)} spans")
        seqs, too_long = [], []
        for utt_id, text, may_be_empty, span in zip(ids, texts, empty_ok, spans, strict=True):
            if not text.strip() and not may_be_empty:
                raise ValueError(f"id={utt_id}: field 'text' is empty")
            if not text.strip() and self.no_speech_id is not None:
                seqs.append(prefix + [NO_SPEECH])
                continue
            body = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False) if text.strip() else []
            if span is None or not text.strip():
                seq = prefix + list(body) + [self.eot_id]
            else:  # the prefix without its last token, <|notimestamps|>
                start, end = span
                if not 0 <= start < end:
                    raise ValueError(f"id={utt_id}: timestamp span {span} must have 0 <= start < end")
                seq = (prefix[:-1] + [self.timestamp_token(start)] + list(body)
                       + [self.timestamp_token(min(end, MAX_AUDIO_S)), self.eot_id])
            if len(seq) > self.max_label_tokens:
                too_long.append((utt_id, len(seq)))
            seqs.append(seq)
        if too_long:
            raise LabelTooLong(too_long, self.max_label_tokens)
        return seqs

    def labels(self, texts: Sequence[str], lang: str, *, ids: Sequence[str] | None = None,
               task: str = "transcribe") -> tuple[Any, Any]:
        """``(labels, decoder_input_ids)``: labels padded and prefix-masked with -100, as training builds them."""
        seqs = self.token_sequences(texts, lang, ids=ids, task=task)
        return collate_tokens(seqs, len(self.prefix_tokens(lang, task)), self.eot_id,
                              no_speech_id=self.no_speech_id if self.no_speech_gate else None)

    # -------------------------------------------------------------- inference

    def encode(self, x: Any, start: int = 0, stop: int | None = None) -> Any:
        """Encoder stages ``[start, stop)`` (see :func:`run_encoder`)."""
        return run_encoder(self.model, x.to(self.device), start, stop)

    @property
    def prompt_limit(self) -> int:
        """Whisper's prompt limit in tokens (223 for every released size): half the decoder context, less one."""
        return self.model.config.max_target_positions // 2 - 1

    def prompt_tokens(self, prompt: str) -> list[int]:
        """``<|startofprev|>`` and the tokens of ``prompt``, as decoding and prompted training put them before
        ``<|startoftranscript|>``; a prompt over :attr:`prompt_limit` keeps its last tokens, like openai-whisper."""
        ids = [int(i) for i in self.tokenizer.get_prompt_ids(prompt)]
        keep = self.prompt_limit
        if len(ids) - 1 > keep:
            log.warning("prompt of %d tokens: only its last %d are used", len(ids) - 1, keep)
            ids = ids[:1] + ids[-keep:]
        return ids

    def term_prompt(self, terms: Sequence[str]) -> tuple[str, list[str]]:
        """A text prompt of ``terms`` that fits :attr:`prompt_limit`, and the terms it leaves out: the terms
        joined by commas, else by spaces (one token less each), else the first terms that fit, space-joined
        (a longer prompt would lose its first tokens, and so its first terms, unsaid)."""
        def size(text: str) -> int:
            return len(self.tokenizer.get_prompt_ids(text)) - 1

        for sep in (", ", " "):
            if size(sep.join(terms)) <= self.prompt_limit:
                return sep.join(terms), []
        kept = 0
        while kept < len(terms) and size(" ".join(terms[:kept + 1])) <= self.prompt_limit:
            kept += 1
        return " ".join(terms[:kept]), list(terms[kept:])

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8, num_beams: int | None = None, max_new_tokens: int | None = None,
                   task: str = "transcribe") -> list[str]:
        """Batched generation with language and task forced; ``prompt`` conditions but is not returned.

        ``max_new_tokens=None`` sizes the limit to each batch's longest clip (:func:`token_budget`), so a
        hallucination loop ends early instead of holding the whole batch for 128 steps. ``num_beams=None``:
        :attr:`num_beams`. With beams, a transcript that repeats itself (compression ratio over
        COMPRESSION_RATIO_LIMIT, the test OpenAI's decoder falls back on) is decoded greedily instead.
        """
        torch, _ = _deps()
        out: list[str] = [""] * len(audios)
        for batch in self.batches([len(a) / SAMPLE_RATE for a in audios], batch_size):
            clips = [audios[i] for i in batch]
            with torch.no_grad():
                hidden = self.encode(self.features(clips))
            limit = max_new_tokens or token_budget(max(len(a) for a in clips) / SAMPLE_RATE)
            for i, text in zip(batch, self._generate(hidden, lang, prompt, num_beams or self.num_beams, limit, task),
                               strict=True):
                out[i] = text
        return out

    def transcribe_encoded(self, encoder_hidden_states: Any, lang: str, *, prompt: str | None = None,
                           batch_size: int = 8, num_beams: int | None = None, max_new_tokens: int = 128,
                           task: str = "transcribe") -> list[str]:
        """Like :meth:`transcribe`, from final encoder outputs (batch, positions, d_model)."""
        torch, _ = _deps()
        hidden = torch.as_tensor(encoder_hidden_states)
        out: list[str] = []
        for i in range(0, hidden.shape[0], batch_size):
            out += self._generate(hidden[i:i + batch_size], lang, prompt, num_beams or self.num_beams,
                                  max_new_tokens, task)
        return out

    def _generate(self, hidden: Any, lang: str, prompt: str | None, num_beams: int, max_new_tokens: int,
                  task: str) -> list[str]:
        torch, _ = _deps()
        from transformers.modeling_outputs import BaseModelOutput

        prefix = self.prefix_tokens(lang, task)  # validates lang and task
        prompt_ids = None
        budget = self.model.config.max_target_positions - len(prefix)
        if prompt is not None and prompt.strip():
            prompt_ids = torch.as_tensor(self.prompt_tokens(prompt), device=self.device)
            budget -= len(prompt_ids)
        if max_new_tokens > budget:
            raise ValueError(f"max_new_tokens={max_new_tokens} plus the prefix and prompt exceed the decoder's "
                             f"{self.model.config.max_target_positions} positions (at most {budget} here)")
        hidden = hidden.to(self.device)
        if not torch.is_autocast_enabled(self.device.type):
            hidden = hidden.to(self.model.dtype)  # e.g. fp32 cached rows into a model loaded in bf16
        extra: dict[str, Any] = {"output_scores": True} if self.no_speech_gate else {}
        start = ([] if prompt_ids is None else prompt_ids.tolist()) + prefix  # what generation starts from
        if num_beams > 1:
            extra["cache"] = beam_cache(self.model, hidden, start[:-1], num_beams)
        with torch.no_grad(), _quiet_generate(), last_position_logits(self.model), clip_rows_attention(self.model):
            out = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), language=lang,
                                      task=task, prompt_ids=prompt_ids, return_timestamps=False,
                                      max_new_tokens=max_new_tokens, num_beams=num_beams,
                                      return_dict_in_generate=True, **extra)
        if out.sequences[:, :len(start)].tolist() != [start] * hidden.shape[0]:  # the cache holds start's states
            raise RuntimeError(f"generation started from {out.sequences[0, :len(start)].tolist()}, not {start}")
        texts = [self._text(row.tolist()) for row in out.sequences]
        if self.no_speech_gate:
            silent = self._no_speech(hidden, out, texts)
            texts = ["" if quiet else text for text, quiet in zip(texts, silent, strict=True)]
        if num_beams > 1:  # a beam stuck in a loop: that window decoded greedily instead
            loops = [i for i, text in enumerate(texts) if compression_ratio(text) > COMPRESSION_RATIO_LIMIT]
            if loops:
                greedy = self._generate(hidden[loops], lang, prompt, 1, max_new_tokens, task)
                for i, text in zip(loops, greedy, strict=True):
                    texts[i] = text
        return texts

    def _no_speech(self, hidden: Any, out: Any, texts: list[str]) -> list[bool]:
        """Whisper's no-speech rule (NO_SPEECH_RULE): a window is silent when the no-speech token's probability
        after ``<|startoftranscript|>`` is over NO_SPEECH_THRESHOLD and its transcript failed, as OpenAI's
        decoder and faster-whisper judge a decode failed: a mean token log-probability (beam search: the beam's
        length-normalized score) under LOGPROB_THRESHOLD or, which they only retry, a compression ratio over
        COMPRESSION_RATIO_LIMIT. A loop the model writes on a window it takes for silence is no transcript: the
        medical model, prompted with its terms, answered a DTMF clip with a confident "psopopopo...".

        The probability is read without the prompt, where OpenAI's decoder reads it after the prompt: a term
        list talks the model out of silence. On the 24 no-speech dev clips of the medical recipe (its model at
        alpha 0.75, bf16) it was 0.45 to 0.93 after the term prompt, 4 clips under the threshold and answered
        with terms ("hemograma" on babble), and 0.99 to 1.00 without it."""
        torch, _ = _deps()
        if getattr(out, "sequences_scores", None) is not None:  # beam search: its length-normalized score
            mean_logprob = out.sequences_scores.float()
        else:
            steps = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            generated = out.sequences[:, -steps.shape[1]:]
            ended = torch.cumsum(generated == self.eot_id, dim=1)  # tokens up to and including the first eot
            counted = (ended == 0) | ((ended == 1) & (generated == self.eot_id))
            mean_logprob = (steps.float() * counted).sum(1) / counted.sum(1).clamp(min=1)
        silent = [False] * hidden.shape[0]
        doubtful = [i for i, (score, text) in enumerate(zip(mean_logprob.tolist(), texts, strict=True))
                    if score < LOGPROB_THRESHOLD or compression_ratio(text) > COMPRESSION_RATIO_LIMIT]
        if not doubtful:  # a confident transcript stands whatever the no-speech token says: no decoder pass
            return silent
        dec = torch.full((len(doubtful), 1), self.sot_id, device=self.device)  # never after the prompt (above)
        logits = self.model.model.decoder(input_ids=dec, encoder_hidden_states=hidden[doubtful]).last_hidden_state
        logits = self.model.proj_out(logits[:, -1]).float()
        no_speech = torch.softmax(logits, dim=-1)[:, self.no_speech_id]
        for i, p in zip(doubtful, no_speech.tolist(), strict=True):
            silent[i] = p > NO_SPEECH_THRESHOLD
        return silent

    def _text(self, ids: list[int]) -> str:
        if self.sot_id in ids:  # anything up to the forced prefix (a prompt) is not output
            ids = ids[ids.index(self.sot_id) + 1:]
        if self.eot_id in ids:
            ids = ids[:ids.index(self.eot_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


class _GenerateNoise(logging.Filter):
    """Drops transformers' per-call warnings about settings this module makes on purpose."""

    NOISE = ("seem to have been set", "attention mask is not set", "together with generation-related",
             # Whisper's generate checks a copy of the config without return_dict_in_generate; the scores come back
             "generation flags are not valid and may be ignored: ['output_scores']")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


@contextlib.contextmanager
def _quiet_generate() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("transformers.generation.utils",
                                               "transformers.generation.configuration_utils",
                                               "transformers.models.whisper.generation_whisper")]
    noise = _GenerateNoise()
    for lg in loggers:
        lg.addFilter(noise)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(noise)


# ------------------------------------------------------------------ configs and random models


def complete_generation_config(gen: Any, tokenizer: Any) -> Any:
    """Fill the multilingual fields ``generate(language=..., task=...)`` needs, from the tokenizer."""
    vocab = tokenizer.get_vocab()
    langs = {t: i for t, i in vocab.items() if t.startswith("<|") and t.endswith("|>") and 4 <= len(t) <= 8
             and t[2:-2].isalpha() and t[2:-2].islower() and t not in SPECIALS}
    filled = []
    defaults = {
        "lang_to_id": langs,
        "task_to_id": {"transcribe": vocab.get("<|transcribe|>"), "translate": vocab.get("<|translate|>")},
        "no_timestamps_token_id": vocab.get("<|notimestamps|>"),
        "prev_sot_token_id": vocab.get("<|startofprev|>"),
        "decoder_start_token_id": vocab.get("<|startoftranscript|>"),
        "eos_token_id": vocab.get("<|endoftext|>"),
        "pad_token_id": vocab.get("<|endoftext|>"),
        "is_multilingual": bool(langs),
    }
    for key, value in defaults.items():
        if getattr(gen, key, None) in (None, {}) and value not in (None, {}):
            setattr(gen, key, value)
            filled.append(key)
    if filled:
        log.info("generation config: filled %s from the tokenizer", ", ".join(filled))
    return gen
