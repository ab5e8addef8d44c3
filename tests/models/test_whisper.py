"""Tests for speechtl.models.whisper on a tiny random Whisper (no hub, no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from speechtl.models.collate import NO_SPEECH, WhisperCollator, collate_tokens, no_speech_aware_loss
from speechtl.models.encoder_stages import num_encoder_stages
from speechtl.models.specaugment import SpecAugmentConfig, hidden_spec_augment, spec_augment
from speechtl.models.whisper import LabelTooLong, WhisperASR, complete_generation_config
from speechtl.models.random_whisper import save_random_whisper

SR = 16000


def tone(freq_hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_random_whisper(tmp_path_factory.mktemp("whisper") / "tiny", seed=1)


@pytest.fixture(scope="module")
def asr(tiny_dir):
    return WhisperASR.load(tiny_dir)


@pytest.fixture(scope="module")
def talkative(tiny_dir):
    """A tiny model whose special tokens never win greedy decoding, so transcripts are not empty."""
    model = WhisperASR.load(tiny_dir)
    with torch.no_grad():
        model.model.model.decoder.embed_tokens.weight[256:] = 0  # tied to proj_out: special logits are 0
    return model


def greedy(asr: WhisperASR, hidden, start: list[int], steps: int) -> list[list[int]]:
    """Reference decoder: plain argmax from an explicit start sequence, begin-suppression applied."""
    out = []
    for row in range(hidden.shape[0]):
        ids = list(start)
        for step in range(steps):
            with torch.no_grad():
                logits = asr.model(encoder_outputs=(hidden[row:row + 1],),
                                   decoder_input_ids=torch.tensor([ids])).logits[0, -1]
            if step == 0:
                logits[asr.generation_config.begin_suppress_tokens] = -float("inf")
            ids.append(int(logits.argmax()))
            if ids[-1] == asr.eot_id:
                break
        out.append(ids[len(start):])
    return out


def decode(asr: WhisperASR, ids: list[int]) -> str:
    return asr.tokenizer.decode([i for i in ids if i != asr.eot_id], skip_special_tokens=True).strip()


# ------------------------------------------------------------------ loading and prefix


def test_saved_dir_is_a_complete_transformers_dir(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    gen = json.loads((tiny_dir / "generation_config.json").read_text())
    assert gen["lang_to_id"]["<|es|>"] > gen["decoder_start_token_id"]
    assert gen["task_to_id"]["transcribe"] and gen["no_timestamps_token_id"]


def test_load_missing_dir_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        WhisperASR.load(tmp_path / "nowhere")


def test_prefix_tokens_are_explicit(asr):
    tok = asr.tokenizer
    expected = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|es|>", "<|transcribe|>", "<|notimestamps|>"])
    assert asr.prefix_tokens("es") == expected
    assert asr.prefix_tokens("es", timestamps=True) == expected[:3]
    assert asr.prefix_tokens("en", task="translate")[1:3] == tok.convert_tokens_to_ids(["<|en|>", "<|translate|>"])
    with pytest.raises(ValueError, match="'xx'"):
        asr.prefix_tokens("xx")
    with pytest.raises(ValueError, match="summarize"):
        asr.prefix_tokens("es", task="summarize")


def test_complete_generation_config_fills_missing_fields(asr):
    from transformers import GenerationConfig

    gen = complete_generation_config(GenerationConfig(), asr.tokenizer)
    assert gen.lang_to_id["<|es|>"] == asr.prefix_tokens("es")[1]
    assert gen.task_to_id["transcribe"] == asr.prefix_tokens("es")[2]
    assert gen.no_timestamps_token_id == asr.prefix_tokens("es")[3]
    assert gen.decoder_start_token_id == asr.sot_id and gen.is_multilingual


# ------------------------------------------------------------------ labels


def test_labels_shift_pad_and_mask_the_prefix(asr):
    labels, dec = asr.labels(["hola", "buenos días"], "es")
    prefix = asr.prefix_tokens("es")
    assert labels.shape == dec.shape
    assert (dec[:, :4] == torch.tensor(prefix)).all()
    assert (labels[:, 1:3] == -100).all()  # forced task tokens are not learned; the language is when the model
    assert (labels[:, 0] == (prefix[1] if asr.no_speech_gate else -100)).all()  # has a no-speech rule to feed
    text_ids = asr.tokenizer.encode(" hola", add_special_tokens=False)
    n = len(text_ids)
    assert labels[0, 3:3 + n].tolist() == text_ids  # first text token is predicted from <|notimestamps|>
    assert labels[0, 3 + n] == asr.eot_id
    assert (labels[0, 4 + n:] == -100).all() and (dec[0, 4 + n:] == asr.eot_id).all()
    assert labels[1, -1] == asr.eot_id  # the longest row has no padding
    for row in range(2):  # labels are the decoder inputs shifted left
        real = labels[row] != -100
        idx = real.nonzero().flatten()
        assert (labels[row, idx[:-1]] == dec[row, idx[:-1] + 1]).all()
    assert decode(asr, labels[1][labels[1] != -100].tolist()) == "buenos días"


def test_long_labels_are_reported_not_cut(tiny_dir):
    short = WhisperASR.load(tiny_dir, max_label_tokens=12)
    assert len(short.token_sequences(["hola"], "es")[0]) == 4 + 5 + 1
    with pytest.raises(LabelTooLong, match="id=b") as info:
        short.labels(["hola", "una frase bastante larga", "otra frase larga"], "es", ids=["a", "b", "c"])
    assert [i for i, _ in info.value.items] == ["b", "c"]
    assert all(n > 12 for _, n in info.value.items)
    with pytest.raises(ValueError, match="id=z: field 'text' is empty"):
        short.labels(["  "], "es", ids=["z"])
    with pytest.raises(ValueError, match="max_label_tokens"):
        WhisperASR.load(tiny_dir, max_label_tokens=1000)


def test_collate_tokens_masks_prefix_of_each_row():
    labels, dec = collate_tokens([[1, 2, 3, 4, 9, 0], [1, 2, 3, 4, 0]], num_prefix=4, pad_id=0)
    assert dec.tolist() == [[1, 2, 3, 4, 9], [1, 2, 3, 4, 0]]
    assert labels.tolist() == [[-100, -100, -100, 9, 0], [-100, -100, -100, 0, -100]]
    # with a no-speech token: the language position is trained; a clip without speech reads the forced prefix
    # and learns the no-speech token after <|startoftranscript|> and "no word is likely" after the prefix
    labels, dec = collate_tokens([[1, 2, 3, 4, 9, 0], [1, 2, 3, 4, NO_SPEECH]], num_prefix=4, pad_id=0,
                                 no_speech_id=7)
    assert dec.tolist() == [[1, 2, 3, 4, 9], [1, 2, 3, 4, 0]]
    assert labels.tolist() == [[2, -100, -100, 9, 0], [7, -100, -100, NO_SPEECH, -100]]
    with pytest.raises(ValueError, match="row 1: a no-speech target needs"):
        collate_tokens([[1, 2, 3, 4, 0], [1, 2, 3, 4, NO_SPEECH]], num_prefix=4, pad_id=0)


def test_the_no_speech_label_is_a_uniform_target():
    logits = torch.randn(3, 11)
    labels = torch.tensor([4, NO_SPEECH, 0])
    ce = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]], reduction="sum")
    uniform = -torch.log_softmax(logits[1], dim=-1).mean() - torch.log(torch.tensor(11.0))  # KL(uniform || p)
    assert torch.allclose(no_speech_aware_loss(logits, labels), (ce + uniform) / 3)
    # the uniform target is at its lowest when every token is as likely as the others
    flat, peaked = torch.zeros(1, 11), torch.zeros(1, 11)
    peaked[0, 3] = 5.0
    marker = torch.tensor([NO_SPEECH])
    assert no_speech_aware_loss(flat, marker) < no_speech_aware_loss(peaked, marker)
    assert float(no_speech_aware_loss(flat, marker)) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ features and encoder stages


def test_features_shape_and_30s_limit(asr):
    feats = asr.features([tone(440), tone(880, 2.5)])
    assert feats.shape == (2, 80, 3000) and feats.dtype == torch.float32
    with pytest.raises(ValueError, match="id=long"):
        asr.features([tone(440, 31.0)], ids=["long"])


def test_encoder_stages_compose_to_the_encoder(asr):
    feats = asr.features([tone(300), tone(600)])
    with torch.no_grad():
        ref = asr.model.model.encoder(feats).last_hidden_state
        full = asr.encode(feats)
        assert torch.allclose(full, ref, atol=1e-5)
        for split in range(1, num_encoder_stages(asr.model)):
            head = asr.encode(feats, 0, split)
            assert torch.allclose(asr.encode(head, split), ref, atol=1e-5), split
    with pytest.raises(ValueError, match="outside"):
        asr.encode(feats, 3, 1)


# ------------------------------------------------------------------ decoding


def test_transcribe_forces_language_and_task(talkative):
    audios = [tone(300), tone(700, 0.6), tone(1200, 1.4)]
    hyps = talkative.transcribe(audios, "es", batch_size=2, max_new_tokens=6)
    assert len(hyps) == 3 and all(isinstance(h, str) and h for h in hyps)
    hidden = talkative.encode(talkative.features(audios))
    expected = [decode(talkative, ids) for ids in greedy(talkative, hidden, talkative.prefix_tokens("es"), 6)]
    assert hyps == expected
    beams = talkative.transcribe(audios[:1], "es", num_beams=2, max_new_tokens=6)
    assert len(beams) == 1 and isinstance(beams[0], str)


def test_transcribe_with_prompt_conditions_but_strips_it(talkative):
    audios = [tone(300), tone(700, 0.6)]
    prompt = "consulta de cardiología"
    hyps = talkative.transcribe(audios, "es", prompt=prompt, max_new_tokens=6)
    prompt_ids = talkative.tokenizer.get_prompt_ids(prompt, return_tensors="np").tolist()
    start = prompt_ids + talkative.prefix_tokens("es")
    hidden = talkative.encode(talkative.features(audios))
    assert hyps == [decode(talkative, ids) for ids in greedy(talkative, hidden, start, 6)]
    assert not any(h.startswith(prompt) for h in hyps)
    with pytest.raises(ValueError, match="max_new_tokens"):
        talkative.transcribe(audios[:1], "es", prompt=prompt, max_new_tokens=440)


def test_long_prompt_keeps_its_last_223_tokens(talkative, caplog):
    audios = [tone(300)]
    prompt = ", ".join(f"término{i}" for i in range(200))
    ids = talkative.tokenizer.get_prompt_ids(prompt, return_tensors="np").tolist()
    assert len(ids) - 1 > 223
    with caplog.at_level("WARNING"):
        hyps = talkative.transcribe(audios, "es", prompt=prompt, max_new_tokens=6)
    assert "only its last 223 are used" in caplog.text
    start = ids[:1] + ids[-223:] + talkative.prefix_tokens("es")
    hidden = talkative.encode(talkative.features(audios))
    assert hyps == [decode(talkative, row) for row in greedy(talkative, hidden, start, 6)]


def test_term_prompt_fits_the_limit_and_names_what_it_leaves_out(asr):
    def size(text):
        return len(asr.tokenizer.get_prompt_ids(text)) - 1

    assert asr.prompt_limit == 223
    assert asr.term_prompt(["amoxicilina", "insuficiencia renal"]) == ("amoxicilina, insuficiencia renal", [])
    # commas do not fit, spaces do: every term is kept, one token fewer each
    terms = [f"término{i}" for i in range(200)]
    n = next(n for n in range(1, 200) if size(", ".join(terms[:n])) > 223 and size(" ".join(terms[:n])) <= 223)
    assert asr.term_prompt(terms[:n]) == (" ".join(terms[:n]), [])
    # neither fits: the first terms that fit, whole, and the rest named
    prompt, left_out = asr.term_prompt(terms)
    kept = prompt.split(" ")
    assert kept == terms[:len(kept)] and left_out == terms[len(kept):] and left_out
    assert size(prompt) <= 223 < size(" ".join(terms[:len(kept) + 1]))


def test_transcribe_encoded_equals_transcribe(talkative):
    audios = [tone(500), tone(900, 0.8)]
    hidden = talkative.encode(talkative.features(audios))
    assert talkative.transcribe_encoded(hidden, "es", max_new_tokens=5) == \
        talkative.transcribe(audios, "es", max_new_tokens=5)


def test_low_precision_model_and_autocast_decode(tiny_dir, asr):
    audios = [tone(500), tone(900, 0.8)]
    half = WhisperASR.load(tiny_dir, dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    assert len(half.transcribe(audios, "es", max_new_tokens=3)) == 2
    hidden = asr.encode(asr.features(audios))  # float32 rows into a bf16 model
    assert len(half.transcribe_encoded(hidden, "es", max_new_tokens=3)) == 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert len(asr.transcribe(audios, "es", max_new_tokens=3)) == 2


# ------------------------------------------------------------------ SpecAugment and the collator


def test_spec_augment_is_seeded_and_bounded():
    feats = torch.randn(2, 80, 3000)
    config = SpecAugmentConfig(time_masks=2, time_mask_frames=30, freq_masks=1, freq_mask_bins=8, seed=5)
    a = spec_augment(feats, [500, 3000], config, [(0, 1), (0, 2)])
    b = spec_augment(feats, [500, 3000], config, [(0, 1), (0, 2)])
    c = spec_augment(feats, [500, 3000], config, [(1, 1), (1, 2)])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, feats) and torch.equal(feats, feats.clone())  # input untouched
    changed_frames = (a[0] != feats[0]).any(dim=0).nonzero().flatten()
    freq_rows = (a[0] != feats[0]).all(dim=1).sum()
    assert freq_rows <= 8
    if freq_rows == 0:  # time masks stay inside the real audio (500 frames)
        assert changed_frames.max() < 500
    with pytest.raises(ValueError, match="time_masks"):
        SpecAugmentConfig(time_masks=-1)


def test_hidden_spec_augment_masks_speech_positions_and_a_share_of_channels():
    hidden = torch.randn(2, 1500, 512)
    config = SpecAugmentConfig(time_masks=2, time_mask_frames=40, freq_masks=1, freq_mask_bins=10, seed=1)
    keys = [(0, i) for i in range(2)]
    a = hidden_spec_augment(hidden, [2.0, None], config, keys, n_mels=80)
    assert a.shape == hidden.shape and torch.equal(a, hidden_spec_augment(hidden, [2.0, None], config, keys,
                                                                          n_mels=80))
    diff = a[0] != hidden[0]
    whole_channels = diff.all(dim=0).sum().item()
    assert whole_channels <= 64  # 10 of 80 bins -> 64 of 512 channels
    time_only = diff & ~diff.all(dim=0, keepdim=True)
    if time_only.any():  # time masks: at most 2 x 20 positions, inside the 2 s of speech (100 positions)
        rows = time_only.any(dim=1).nonzero().flatten()
        assert rows.max() < 100 and len(rows) <= 40


def test_the_no_speech_rule_empties_a_window_only_when_both_thresholds_say_so(asr, monkeypatch):
    import speechtl.models.whisper as whisper_module

    audios = [tone(400), tone(600)]
    if not asr.no_speech_gate:
        pytest.skip("this tokenizer has no no-speech token")
    as_is = asr.transcribe(audios, "es", max_new_tokens=4)
    monkeypatch.setattr(whisper_module, "NO_SPEECH_THRESHOLD", -1.0)  # every window "probably silent" ...
    monkeypatch.setattr(whisper_module, "LOGPROB_THRESHOLD", float("-inf"))
    assert asr.transcribe(audios, "es", max_new_tokens=4) == as_is  # ... but no text is unconfident enough
    monkeypatch.setattr(whisper_module, "LOGPROB_THRESHOLD", float("inf"))
    assert asr.transcribe(audios, "es", max_new_tokens=4) == ["", ""]  # both say so: silent
    monkeypatch.setattr(whisper_module, "NO_SPEECH_THRESHOLD", 2.0)
    assert asr.transcribe(audios, "es", max_new_tokens=4) == as_is  # the no-speech probability never says so
    asr.no_speech_gate = False
    try:
        assert asr.transcribe(audios, "es", max_new_tokens=4) == as_is
    finally:
        asr.no_speech_gate = True


def test_the_no_speech_probability_is_read_without_the_prompt(asr, monkeypatch):
    import speechtl.models.whisper as whisper_module

    if not asr.no_speech_gate:
        pytest.skip("this tokenizer has no no-speech token")
    monkeypatch.setattr(whisper_module, "LOGPROB_THRESHOLD", float("inf"))  # every transcript failed: the pass runs
    calls = []
    decoder = asr.model.model.decoder
    monkeypatch.setattr(decoder, "forward", lambda *a, forward=decoder.forward, **k: calls.append(
        k["input_ids"].tolist()) or forward(*a, **k))
    asr.transcribe([tone(400), tone(600)], "es", prompt="consulta de cardiología", max_new_tokens=4)
    assert calls[-1] == [[asr.sot_id], [asr.sot_id]]  # the no-speech pass, after generation: no prompt before it
    assert len(calls[0][0]) > 5  # generation itself read the prompt


def test_beam_search_falls_back_to_greedy_on_a_looping_transcript(talkative, monkeypatch):
    audios = [tone(300), tone(700, 0.6), tone(1200, 1.4)]
    greedy_hyps = talkative.transcribe(audios, "es", max_new_tokens=12)
    beam_hyps = talkative.transcribe(audios, "es", num_beams=3, max_new_tokens=12)
    loop = talkative.tokenizer.encode(" que no", add_special_tokens=False) + \
        talkative.tokenizer.encode(", no", add_special_tokens=False) * 40
    real_generate = talkative.model.generate
    widths = []

    def beams_loop_on_the_second_clip(**kwargs):
        out = real_generate(**kwargs)
        widths.append(kwargs["num_beams"])
        if kwargs["num_beams"] > 1:  # the second row's beam writes "que no, no, no, ..."
            seqs = out.sequences.tolist()
            prefix = seqs[1][:len(talkative.prefix_tokens("es"))]
            rows = [row + [talkative.eot_id] * 90 for row in seqs]
            rows[1] = (prefix + loop + [talkative.eot_id] * 90)[:len(rows[0])]
            out.sequences = torch.tensor(rows)
        return out

    monkeypatch.setattr(talkative.model, "generate", beams_loop_on_the_second_clip)
    hyps = talkative.transcribe(audios, "es", num_beams=3, max_new_tokens=12)
    assert widths == [3, 1]  # one beam pass, then greedy for the looping clip alone
    assert hyps == [beam_hyps[0], greedy_hyps[1], beam_hyps[2]]
    widths.clear()
    assert talkative.transcribe(audios, "es", max_new_tokens=12) == greedy_hyps and widths == [1]


@pytest.mark.parametrize("prompt", [None, "consulta de cardiología, amoxicilina"])
def test_beam_search_runs_the_encoder_keys_and_the_start_once_per_clip_and_decodes_the_same(talkative, monkeypatch,
                                                                                            prompt):
    import contextlib

    import speechtl.models.whisper as whisper_module

    audios = [tone(300), tone(700, 0.6), tone(1200, 1.4), tone(500, 0.3)]
    rows: list[int] = []
    layer = talkative.model.model.decoder.layers[0]
    hooks = [layer.encoder_attn.k_proj.register_forward_hook(lambda m, args, out: rows.append(out.shape[0])),
             layer.fc1.register_forward_hook(lambda m, args, out: rows.append(-out.shape[0] * out.shape[1]))]
    start = len(talkative.prefix_tokens("es")) + (len(talkative.tokenizer.get_prompt_ids(prompt)) if prompt else 0)
    try:
        ours = talkative.transcribe(audios, "es", prompt=prompt, num_beams=3, max_new_tokens=12)
        assert rows[:3] == [4, -4 * (start - 1), -12]  # keys and start per clip, then one token per beam
        monkeypatch.setattr(whisper_module, "beam_cache", lambda *a, **k: None)  # transformers' own cache
        monkeypatch.setattr(whisper_module, "clip_rows_attention", lambda model: contextlib.nullcontext())
        rows.clear()
        theirs = talkative.transcribe(audios, "es", prompt=prompt, num_beams=3, max_new_tokens=12)
    finally:
        for hook in hooks:
            hook.remove()
    assert rows[:2] == [12, -12 * start]  # transformers: keys and start per beam
    assert theirs == ours and any(ours)  # words were decoded, so beams were reordered along the way
    assert talkative.model.config._attn_implementation == "sdpa"  # restored after decoding


def test_beam_search_refuses_a_cache_started_from_other_tokens_than_generation(talkative, monkeypatch):
    english = talkative.prefix_tokens("en")
    monkeypatch.setattr(talkative, "prefix_tokens", lambda lang, task="transcribe": english)  # generation: es
    with pytest.raises(RuntimeError, match="generation started from"):
        talkative.transcribe([tone(300)], "es", num_beams=2, max_new_tokens=4)


def test_attention_over_clip_rows_matches_attention_over_repeated_rows():
    from transformers.models.whisper.modeling_whisper import eager_attention_forward

    from speechtl.models.beam_cache import _attention_over_clip_rows

    clips, beams, heads, positions, width = 3, 2, 4, 5, 8
    query = torch.randn(clips * beams, heads, positions, width)
    key, value = torch.randn(clips, heads, 7, width), torch.randn(clips, heads, 7, width)
    attention = _attention_over_clip_rows(eager_attention_forward)
    module = torch.nn.Module().eval()
    shared, _ = attention(module, query, key, value, None, scaling=0.5)
    repeated, _ = eager_attention_forward(module, query, key.repeat_interleave(beams, 0),
                                          value.repeat_interleave(beams, 0), None, scaling=0.5)
    assert shared.shape == repeated.shape == (clips * beams, positions, heads, width)
    torch.testing.assert_close(shared, repeated)
    with pytest.raises(ValueError, match="5 query rows for 3 clips"):
        attention(module, query[:5], key, value, None, scaling=0.5)


def test_a_prompted_decode_projects_only_the_last_position_and_decodes_the_same(talkative, monkeypatch):
    import contextlib

    import speechtl.models.whisper as whisper_module

    audios = [tone(300), tone(700, 0.6), tone(1200, 1.4)]
    prompt = "consulta de cardiología, amoxicilina"
    positions: list[int] = []
    handle = talkative.model.proj_out.register_forward_hook(lambda m, args, out: positions.append(
        args[0].shape[1] if args[0].dim() == 3 else 1))
    try:
        ours = talkative.transcribe(audios, "es", prompt=prompt, max_new_tokens=8)  # greedy: the prompt is a step
        assert positions and set(positions) == {1}
        positions.clear()
        monkeypatch.setattr(whisper_module, "last_position_logits", lambda model: contextlib.nullcontext())
        full = talkative.transcribe(audios, "es", prompt=prompt, max_new_tokens=8)
    finally:
        handle.remove()
    assert max(positions) > 8  # every prompt position was projected
    assert full == ours and any(ours)
    assert talkative.model.proj_out(torch.zeros(1, 5, talkative.model.config.d_model)).shape[1] == 5  # hook gone


def test_the_beam_cache_reorders_the_decoder_states_and_leaves_the_encoder_rows(talkative):
    from speechtl.models.beam_cache import beam_cache

    cache = beam_cache(talkative.model, torch.randn(2, 6, talkative.model.config.d_model))
    cross = cache.cross_attention_cache.layers[0].keys.clone()
    assert cross.shape[0] == 2  # one row per clip
    own = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 2, 3, 8).clone()  # one row per beam
    cache.self_attention_cache.update(own, own + 10, 0)
    cache.reorder_cache(torch.tensor([1, 1, 3, 2]))
    assert cache.self_attention_cache.layers[0].keys[:, 0, 0, 0].tolist() == [1.0, 1.0, 3.0, 2.0]
    assert cache.self_attention_cache.layers[0].values[:, 0, 0, 0].tolist() == [11.0, 11.0, 13.0, 12.0]
    assert torch.equal(cache.cross_attention_cache.layers[0].keys, cross)


def test_a_loop_on_a_window_the_model_takes_for_silence_is_no_transcript(talkative, monkeypatch):
    import speechtl.models.whisper as whisper_module

    if not talkative.no_speech_gate:
        pytest.skip("this tokenizer has no no-speech token")
    audios = [tone(300), tone(700, 0.6)]
    words = talkative.tokenizer.encode(" hola, buenos días", add_special_tokens=False)
    loop = talkative.tokenizer.encode(" ps" + "op" * 40, add_special_tokens=False)
    real_generate = talkative.model.generate

    def the_second_clip_loops(**kwargs):  # the first clip says words, the second loops
        out = real_generate(**kwargs)
        prefix = out.sequences.tolist()[0][:len(talkative.prefix_tokens("es"))]
        rows = [prefix + words, prefix + loop]
        width = out.sequences.shape[1]  # as generated: one score per position after the prefix
        assert all(len(row) < width for row in rows)
        out.sequences = torch.tensor([row + [talkative.eot_id] * (width - len(row)) for row in rows])
        return out

    monkeypatch.setattr(talkative.model, "generate", the_second_clip_loops)
    monkeypatch.setattr(whisper_module, "LOGPROB_THRESHOLD", float("-inf"))  # no transcript is unconfident
    monkeypatch.setattr(whisper_module, "NO_SPEECH_THRESHOLD", 2.0)  # ... and no window silent: the loop stands
    assert talkative.transcribe(audios, "es", max_new_tokens=90) == ["hola, buenos días", "ps" + "op" * 40]
    monkeypatch.setattr(whisper_module, "NO_SPEECH_THRESHOLD", -1.0)  # every window "probably silent"
    assert talkative.transcribe(audios, "es", max_new_tokens=90) == ["hola, buenos días", ""]  # only the loop goes


def test_the_default_beam_width_is_the_models_and_the_no_speech_rule_holds_with_beams(talkative, monkeypatch):
    import speechtl.models.whisper as whisper_module

    audios = [tone(400), tone(600)]
    explicit = talkative.transcribe(audios, "es", num_beams=2, max_new_tokens=6)
    talkative.num_beams = 2
    try:
        assert talkative.transcribe(audios, "es", max_new_tokens=6) == explicit
        if talkative.no_speech_gate:
            monkeypatch.setattr(whisper_module, "NO_SPEECH_THRESHOLD", -1.0)
            monkeypatch.setattr(whisper_module, "LOGPROB_THRESHOLD", float("inf"))
            assert talkative.transcribe(audios, "es", max_new_tokens=6) == ["", ""]
            monkeypatch.setattr(whisper_module, "LOGPROB_THRESHOLD", float("-inf"))
            assert talkative.transcribe(audios, "es", max_new_tokens=6) == explicit
    finally:
        talkative.num_beams = 1


def test_compression_ratio_flags_repetition():
    from speechtl.text.repetition import COMPRESSION_RATIO_LIMIT, compression_ratio

    assert compression_ratio("") == 0.0
    assert compression_ratio("el paciente toma amoxicilina cada ocho horas") < COMPRESSION_RATIO_LIMIT
    assert compression_ratio("que no, " + "no, " * 60) > COMPRESSION_RATIO_LIMIT


def test_an_empty_target_only_where_allowed(asr):
    seqs = asr.token_sequences(["hola", ""], "es", ids=["a", "b"], empty_ok=[False, True])
    if asr.no_speech_id is not None:  # Whisper's own no-speech target
        assert seqs[1] == asr.prefix_tokens("es") + [NO_SPEECH]
    else:
        assert seqs[1] == asr.prefix_tokens("es") + [asr.eot_id]
    assert len(seqs[0]) > len(seqs[1])
    with pytest.raises(ValueError, match="id=b: field 'text' is empty"):
        asr.token_sequences(["hola", ""], "es", ids=["a", "b"])


def test_collator_builds_batches_from_audio_and_rows(asr):
    tokens = asr.token_sequences(["hola", "buenos días"], "es")
    examples = [{"index": i, "input": tone(400 + 100 * i), "tokens": t, "epoch": 0} for i, t in enumerate(tokens)]
    batch = WhisperCollator(asr, num_prefix=4, from_audio=True)(examples)
    assert batch["encoder_input"].shape == (2, 80, 3000)
    assert batch["index"].tolist() == [0, 1]
    labels, dec = asr.labels(["hola", "buenos días"], "es")
    assert torch.equal(batch["labels"], labels) and torch.equal(batch["decoder_input_ids"], dec)
    spec = WhisperCollator(asr, num_prefix=4, from_audio=True, spec=SpecAugmentConfig())(examples)
    assert not torch.equal(spec["encoder_input"], batch["encoder_input"])
    rows = [{"index": i, "input": np.ones((1500, 64), np.float16) * i, "tokens": t, "epoch": 0}
            for i, t in enumerate(tokens)]
    cached = WhisperCollator(asr, num_prefix=4, from_audio=False)(rows)
    assert cached["encoder_input"].dtype == torch.float32 and cached["encoder_input"][1].eq(1).all()


@pytest.mark.parametrize("stage,step", [(None, None), (1, None), (3, None), (1, 1.0), (3, 1.0)])
def test_cached_prefix_transcriber_matches_plain_decoding(talkative, tmp_path, stage, step):
    import soundfile as sf

    from speechtl.data.manifest import Utterance
    from speechtl.models.encoder_cache import CachedEncoderTranscriber

    audios = [tone(300), tone(700, 0.6), tone(1200, 1.4)]  # with 1-s window steps: windows of 1, 1 and 2 s
    utts = []
    for i, audio in enumerate(audios):
        sf.write(tmp_path / f"u{i}.wav", audio, SR)
        utts.append(Utterance(f"u{i}", str(tmp_path / f"u{i}.wav"), "x", duration=len(audio) / SR))
    talkative.window_step_s = step
    try:
        cached = CachedEncoderTranscriber(talkative, tmp_path / "cache", precision="no", stage=stage)
        assert cached.prepare(utts).built == 3 and cached.prepare(utts).built == 0
        expected = talkative.transcribe(audios, "es")  # batches of one window: the same token budgets
        assert cached.transcribe_utterances(utts, "es") == expected
        if step is not None:  # rows computed in their own window, zero after it
            rows = cached._cache.open(utts)
            assert rows[0][:50].any() and not rows[0][50:].any()
            assert not rows[2][100:].any() and rows[2][:100].any()
            whole = CachedEncoderTranscriber(talkative, tmp_path / "cache", precision="no", stage=stage)
            talkative.window_step_s = None  # 30-s windows: another cache key, other rows
            assert CachedEncoderTranscriber(talkative, tmp_path / "cache", precision="no",
                                            stage=stage)._cache.dir != whole._cache.dir
    finally:
        talkative.window_step_s = None
    with pytest.raises(ValueError, match="stage 0"):
        CachedEncoderTranscriber(talkative, tmp_path / "cache", precision="no", stage=0)


def test_cached_prefix_transcriber_encodes_a_clip_once_per_weights(talkative, tmp_path, monkeypatch):
    import copy

    import soundfile as sf

    import speechtl.models.encoder_cache as encoder_cache
    from speechtl.data.manifest import Utterance

    utts = []
    for i, audio in enumerate([tone(300), tone(700, 0.6)]):
        sf.write(tmp_path / f"u{i}.wav", audio, SR)
        utts.append(Utterance(f"u{i}", str(tmp_path / f"u{i}.wav"), "x", duration=len(audio) / SR))
    asr = copy.deepcopy(talkative)
    cached = encoder_cache.CachedEncoderTranscriber(asr, tmp_path / "cache", precision="no", stage=2)
    cached.prepare(utts)
    calls = []
    encode = encoder_cache._encode
    monkeypatch.setattr(encoder_cache, "_encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    plain = cached.transcribe_utterances(utts, "es")
    prompted = cached.transcribe_utterances(utts, "es", prompt="consulta")
    assert len(calls) == 1 and cached.transcribe_utterances(utts[:1], "es") and len(calls) == 1  # kept per clip
    assert prompted == talkative.transcribe([tone(300), tone(700, 0.6)], "es", prompt="consulta")
    with torch.no_grad():
        asr.model.model.encoder.layers[-1].fc2.bias.add_(5.0)  # weights changed in place: encoded afresh
    changed = cached.transcribe_utterances(utts, "es")
    assert len(calls) == 2
    monkeypatch.setattr(encoder_cache, "MEMO_BYTES", 1)  # over the limit: only the batch at hand is kept
    cached.transcribe_utterances(utts[:1], "es")
    assert len(cached._memo) == 1 and cached._memo_bytes == next(iter(cached._memo.values())).nbytes
    cached.transcribe_utterances(utts[1:], "es")
    assert len(calls) == 3 and cached.transcribe_utterances(utts[:1], "es") and len(calls) == 4  # dropped: again
    assert changed == asr.transcribe([tone(300), tone(700, 0.6)], "es") and plain == talkative.transcribe(
        [tone(300), tone(700, 0.6)], "es")


# ------------------------------------------------------------------ timestamped targets


@pytest.fixture(scope="module")
def asr_ts(tmp_path_factory):
    """A tiny model whose vocabulary has Whisper's 1501 timestamp ids after <|notimestamps|> (the byte-level
    test tokenizer does not name them; the ids are what matters)."""
    probe = WhisperASR.load(save_random_whisper(tmp_path_factory.mktemp("probe") / "m", seed=1))
    return WhisperASR.load(save_random_whisper(tmp_path_factory.mktemp("ts") / "m", seed=1,
                                               vocab_size=probe.no_timestamps_id + 1502))


def test_a_vocabulary_without_timestamp_ids_is_refused(asr):
    with pytest.raises(ValueError, match="no timestamp tokens"):
        asr.timestamp_token(1.0)


def test_timestamped_targets_span_the_clip_without_notimestamps(asr_ts):
    asr = asr_ts
    plain, stamped = asr.token_sequences(["hola", "hola"], "es", ids=["a", "b"], spans=[None, (0.0, 1.5)])
    first_ts = asr.no_timestamps_id + 1  # <|0.00|>
    assert stamped[:3] == asr.prefix_tokens("es")[:3] and asr.no_timestamps_id not in stamped
    assert stamped[3] == first_ts and stamped[-2] == first_ts + 75 and stamped[-1] == asr.eot_id  # <|1.50|>
    assert stamped[4:-2] == plain[4:-1]  # the same text tokens between the two timestamps
    assert asr.timestamp_token(30.0) == first_ts + 1500 and asr.timestamp_token(0.013) == first_ts + 1
    assert asr.token_sequences(["hola"], "es", spans=[(0.0, 42.0)])[0][-2] == first_ts + 1500  # end: the window's
    with pytest.raises(ValueError, match="id=b: timestamp span"):
        asr.token_sequences(["hola", "hola"], "es", ids=["a", "b"], spans=[None, (1.0, 1.0)])
    with pytest.raises(ValueError, match="outside one 30-s window"):
        asr.timestamp_token(-0.5)


def test_collator_learns_the_first_timestamp_but_not_the_forced_prefix(asr_ts):
    asr = asr_ts
    tokens = asr.token_sequences(["hola", "hola", ""], "es", spans=[None, (0.0, 1.5), (0.0, 1.0)],
                                 empty_ok=[False, False, True])
    assert tokens[2][-1] == NO_SPEECH and asr.no_timestamps_id in tokens[2]  # no speech: no span, plain prefix
    collator = WhisperCollator(asr, num_prefix=4, from_audio=True)
    assert [collator.prefix_length(t) for t in tokens] == [4, 3, 4]
    examples = [{"index": i, "input": tone(400), "tokens": t, "epoch": 0} for i, t in enumerate(tokens)]
    labels = collator(examples)["labels"]
    assert labels[0, 2] == -100 and labels[0, 3] == tokens[0][4]  # plain: <|notimestamps|> is forced
    assert labels[1, 1] == -100 and labels[1, 2] == asr.no_timestamps_id + 1  # timestamped: <|0.00|> is learned
    assert labels[1, 2 + len(tokens[1]) - 4] == asr.eot_id  # ... and so are the text, <|1.50|> and the end


def test_a_prompted_target_learns_only_what_follows_the_prompt(asr_ts):
    asr = asr_ts
    prompt = asr.prompt_tokens("amoxicilina, ibuprofeno")
    assert prompt == [int(i) for i in asr.tokenizer.get_prompt_ids("amoxicilina, ibuprofeno")]
    assert prompt[0] == asr.tokenizer.convert_tokens_to_ids("<|startofprev|>") and asr.sot_id not in prompt
    plain = asr.token_sequences(["hola", "hola", ""], "es", spans=[None, (0.0, 1.5), None],
                                empty_ok=[False, False, True])
    collator = WhisperCollator(asr, num_prefix=4, from_audio=True)
    prompted = [prompt + t for t in plain]
    n = len(prompt)
    assert [collator.start(t) for t in prompted + plain] == [n] * 3 + [0] * 3
    assert [collator.prefix_length(t) for t in prompted] == [collator.prefix_length(t) for t in plain] == [4, 3, 4]

    def labels(tokens):
        return collator([{"index": i, "input": tone(400), "tokens": t, "epoch": 0}
                         for i, t in enumerate(tokens)])["labels"]

    alone, with_prompt = labels(plain), labels(prompted)
    assert (with_prompt[:, :n] == -100).all()  # the prompt and <|startoftranscript|> are never targets
    for i, t in enumerate(plain):  # after it, the same labels as without the prompt
        assert with_prompt[i, n:n + len(t) - 1].tolist() == alone[i, :len(t) - 1].tolist()
    assert (with_prompt[2, n] == asr.no_speech_id) == (alone[2, 0] == asr.no_speech_id)
