"""Tests for speechtl.train.loop, speechtl.train.strategies and speechtl.models.encoder_cache (tiny random Whisper)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402
from tone_corpus import tone_rows, write_tone  # noqa: E402

from speechtl.data.manifest import read_manifest, write_jsonl  # noqa: E402
from speechtl.models.collate import WhisperCollator
from speechtl.models.encoder_cache import cache_whisper_encoder  # noqa: E402
from speechtl.models.encoder_stages import num_encoder_stages
from speechtl.models.whisper import WhisperASR
from speechtl.models.random_whisper import save_random_whisper
from speechtl.text.normalize import get_normalizer  # noqa: E402
from speechtl.train.batches import LengthBucketSampler  # noqa: E402
from speechtl.train.config import TrainConfig  # noqa: E402
from speechtl.train.loop import train  # noqa: E402
from speechtl.train.lora import merge_lora_state_dict  # noqa: E402
from speechtl.train.parts import TrainEvent  # noqa: E402
from speechtl.train.seq2seq import drawn, train_module, training_items  # noqa: E402
from speechtl.train.strategies import apply_strategy, frozen_prefix, set_dropout  # noqa: E402

TEXTS = ["hola", "buenos días", "gracias", "adiós", "por favor", "sí señor", "buenas noches", "hasta luego"]
NORM = get_normalizer("es")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    rows = tone_rows(root, TEXTS)
    write_jsonl(root / "train.jsonl", rows)
    write_jsonl(root / "dev.jsonl", rows[:3])
    return {"root": root, "train": root / "train.jsonl", "dev": root / "dev.jsonl"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_random_whisper(tmp_path_factory.mktemp("model") / "tiny", seed=2)


def quick(**overrides) -> TrainConfig:
    settings = dict(max_steps=8, batch_size=2, learning_rate=3e-3, warmup_steps=1, eval_every_steps=8,
                    eval_at_start=False, eval_max_new_tokens=4, log_every_steps=1, top_k=1, lora_r=4, lora_alpha=8)
    settings.update(overrides)
    return TrainConfig(**settings)


def losses(history: Path) -> list[float]:
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    return [r["loss"] for r in rows if r["loss"] is not None]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("field,value,message", [
    ("strategy", "bogus", "TrainConfig.strategy must be one of"),
    ("top_k", 0, "TrainConfig.top_k must be an integer >= 1"),
    ("batch_size", 2.5, "TrainConfig.batch_size"),
    ("learning_rate", 0.0, "TrainConfig.learning_rate must be a number > 0"),
    ("lora_dropout", 1.5, "TrainConfig.lora_dropout"),
    ("lora_targets", (), "TrainConfig.lora_targets"),
    ("mixed_precision", "fp8", "TrainConfig.mixed_precision"),
    ("max_steps", 0, "TrainConfig.max_steps"),
    ("early_stopping_patience", 0, "TrainConfig.early_stopping_patience"),
    ("max_grad_norm", -1.0, "TrainConfig.max_grad_norm"),
    ("max_train_time_s", float("nan"), "TrainConfig.max_train_time_s"),
    ("long_labels", "cut", "TrainConfig.long_labels"),
    ("freeze_embeddings", "yes", "TrainConfig.freeze_embeddings must be true or false"),
    ("lang", "ES", "TrainConfig.lang"),
    ("eval_at_start", 1, "TrainConfig.eval_at_start"),
    ("dropout", 1.0, "TrainConfig.dropout must be a number >= 0 and <= 0.9"),
    ("timestamp_share", 1.5, "TrainConfig.timestamp_share must be a number >= 0 and <= 1"),
    ("prompt_share", -0.1, "TrainConfig.prompt_share must be a number >= 0 and <= 1"),
    ("prompt", None, "TrainConfig.prompt must be a string"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        TrainConfig(**{field: value})


def test_config_from_dict():
    config = TrainConfig.from_dict({"strategy": "lora", "lora_targets": ["q_proj", "v_proj"]})
    assert config.lora_targets == ("q_proj", "v_proj") and config.peak_learning_rate == 1e-3
    assert TrainConfig(spec_augment=True, cache_encoder=False).spec_augment
    assert TrainConfig(spec_augment=True).cache_encoder  # masks then fall on the cached encoder states
    with pytest.raises(ValueError, match="unknown train setting.*'epochs'"):
        TrainConfig.from_dict({"epochs": 3})


# ------------------------------------------------------------------ data helpers


def test_length_bucket_sampler_is_seeded_and_complete():
    lengths = list(np.random.default_rng(0).integers(5, 50, size=23))
    sampler = LengthBucketSampler(lengths, batch_size=4, bucket_batches=2, seed=7)
    first = sampler.batches()
    assert first == sampler.batches() and len(first) == len(sampler) == 6
    assert sorted(i for b in first for i in b) == list(range(23))
    for batch in first:  # sorted inside each window: a batch never mixes across its window's order
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    sampler.use_epoch(1)
    assert sampler.batches() != first


def test_length_bucket_sampler_never_mixes_groups():
    lengths = list(np.random.default_rng(0).integers(5, 50, size=23))
    groups = [10.0 if i % 3 else 20.0 for i in range(23)]  # e.g. encoder windows
    sampler = LengthBucketSampler(lengths, batch_size=4, bucket_batches=2, seed=7, groups=groups)
    batches = sampler.batches()
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(23)) and len(batches) == len(sampler) == 4 + 2
    one = LengthBucketSampler(lengths, batch_size=4, bucket_batches=2, seed=7, groups=[5.0] * 23)
    assert one.batches() == LengthBucketSampler(lengths, batch_size=4, bucket_batches=2, seed=7).batches()


def test_long_labels_error_or_skip(tiny, corpus):
    asr = WhisperASR.load(tiny, max_label_tokens=12)
    utts = read_manifest(corpus["train"])[:3]  # "hola" fits, "buenos días" and "gracias" do not
    with pytest.raises(ValueError, match="id=u1"):
        training_items(utts, asr, lang="es", task="transcribe", long_labels="error", where="train.jsonl")
    kept, tokens, skipped = training_items(utts, asr, lang="es", task="transcribe", long_labels="skip",
                                           where="train.jsonl")
    assert [u.id for u in kept] == ["u0"] and len(tokens) == 1
    assert [s.id for s in skipped] == ["u1", "u2"] and skipped[0].reason == "label_too_long"


def test_a_seeded_share_of_targets_carries_timestamps(tiny, corpus, tmp_path):
    ids = [f"utt{i}" for i in range(2000)]
    half = [drawn(i, 0.5, seed=0) for i in ids]
    assert 900 < sum(half) < 1100 and half == [drawn(i, 0.5, seed=0) for i in ids]  # seeded
    assert half != [drawn(i, 0.5, seed=1) for i in ids]
    assert not any(drawn(i, 0.0, seed=0) for i in ids) and all(drawn(i, 1.0, seed=0) for i in ids)
    probe = WhisperASR.load(tiny)
    wide = save_random_whisper(tmp_path / "ts", seed=2, vocab_size=probe.no_timestamps_id + 1502)
    asr = WhisperASR.load(wide)
    utts = read_manifest(corpus["train"])
    _, plain, _ = training_items(utts, asr, lang="es", task="transcribe", long_labels="error", where="t")
    _, stamped, _ = training_items(utts, asr, lang="es", task="transcribe", long_labels="error", where="t",
                                   timestamp_share=1.0)
    for utt, p, s in zip(utts, plain, stamped, strict=True):
        assert asr.no_timestamps_id in p and asr.no_timestamps_id not in s
        assert s[-2] == asr.timestamp_token(utt.duration)  # the clip's end
    with pytest.raises(ValueError, match="no timestamp tokens"):  # a vocabulary without them says so
        training_items(utts, probe, lang="es", task="transcribe", long_labels="error", where="t",
                       timestamp_share=1.0)


def test_a_seeded_share_of_targets_is_conditioned_on_the_prompt(tiny, corpus):
    ids = [f"utt{i}" for i in range(2000)]
    assert [drawn(i, 0.5, 0, "prompt") for i in ids] != [drawn(i, 0.5, 0) for i in ids]  # not the timestamps' draw
    asr = WhisperASR.load(tiny)
    utts = read_manifest(corpus["train"])

    def sequences(**prompting):
        return training_items(utts, asr, lang="es", task="transcribe", long_labels="error", where="t", **prompting)[1]

    plain = sequences()
    prompt = asr.prompt_tokens("hola, gracias")
    assert sequences(prompt="hola, gracias", prompt_share=1.0) == [prompt + t for t in plain]
    assert sequences(prompt="hola, gracias", prompt_share=0.0) == sequences(prompt="", prompt_share=1.0) == plain
    half = sequences(prompt="hola, gracias", prompt_share=0.5)
    assert half == [prompt + t if drawn(u.id, 0.5, 0, "prompt") else t for u, t in zip(utts, plain, strict=True)]
    long_prompt = " ".join(["hola"] * 400)  # cut to its last 223 tokens
    utts[0] = dataclasses.replace(utts[0], text=" ".join(["gracias"] * 40))  # a label that leaves it no room
    long_label = sequences()[0]
    assert len(long_label) + len(asr.prompt_tokens(long_prompt)) > asr.model.config.max_target_positions
    assert sequences(prompt=long_prompt, prompt_share=1.0)[0] == long_label


# ------------------------------------------------------------------ encoder cache


def test_encoder_cache_hits_and_invalidation(tiny, corpus, tmp_path):
    asr = WhisperASR.load(tiny)
    utts = read_manifest(corpus["train"])[:4]
    for i, utt in enumerate(utts):  # private copies of the audio: one gets rewritten below
        path = tmp_path / f"{utt.id}.wav"
        path.write_bytes(Path(utt.audio_filepath).read_bytes())
        utts[i] = type(utt)(id=utt.id, audio_filepath=str(path), text=utt.text)
    stage = num_encoder_stages(asr.model)
    root = tmp_path / "cache"
    rows, stats = cache_whisper_encoder(asr, utts, stage, root, precision="no", batch_size=3)
    assert (stats.hits, stats.built) == (0, 4)
    with torch.no_grad():
        ref = asr.model.model.encoder(asr.features([np.asarray(sf.read(u.audio_filepath)[0], np.float32)
                                                     for u in utts])).last_hidden_state.numpy()
    assert rows.rows(range(4)).dtype == np.float16
    np.testing.assert_allclose(rows.rows(range(4)).astype(np.float32), ref, atol=2e-2, rtol=1e-2)

    again, stats = cache_whisper_encoder(asr, utts, stage, root, precision="no")
    assert (stats.hits, stats.built) == (4, 0)
    assert np.array_equal(again.rows(range(4)), rows.rows(range(4)))

    # the same bytes elsewhere (data prepared anew, another run folder) keep their rows
    copies = []
    for u in utts:
        copy = tmp_path / "again" / Path(u.audio_filepath).name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(Path(u.audio_filepath).read_bytes())
        copies.append(dataclasses.replace(u, audio_filepath=str(copy)))
    moved, stats = cache_whisper_encoder(asr, copies, stage, root, precision="no")
    assert (stats.hits, stats.built) == (4, 0) and np.array_equal(moved.rows(range(4)), rows.rows(range(4)))

    write_tone(Path(utts[1].audio_filepath), 3000, 0.9)  # edited audio: other bytes
    edited, stats = cache_whisper_encoder(asr, utts, stage, root, precision="no")
    assert (stats.hits, stats.built) == (3, 1)
    assert not np.array_equal(edited[1], rows[1]) and np.array_equal(edited[2], rows[2])

    with torch.no_grad():
        asr.model.model.encoder.conv1.weight.add_(0.01)  # other weights: another model key
    _, stats = cache_whisper_encoder(asr, utts, stage, root, precision="no")
    assert (stats.hits, stats.built) == (0, 4)
    _, stats = cache_whisper_encoder(asr, utts, 2, root, precision="no")  # another stage: another key
    assert stats.built == 4


def test_a_zero_filled_cache_shard_is_rebuilt_never_read(tiny, corpus, tmp_path, caplog):
    asr = WhisperASR.load(tiny)
    utts = read_manifest(corpus["train"])[:3]
    stage, root = num_encoder_stages(asr.model), tmp_path / "cache"
    rows, _ = cache_whisper_encoder(asr, utts, stage, root, precision="no")
    good = rows.rows(range(3)).copy()
    shard = next(root.rglob("*.f16"))
    shard.write_bytes(bytes(shard.stat().st_size))  # zero-filled at its own size: passes any size check
    with caplog.at_level(logging.WARNING):
        again, stats = cache_whisper_encoder(asr, utts, stage, root, precision="no")
    assert (stats.hits, stats.built) == (0, 3)
    assert "does not match its digest" in caplog.text and utts[0].id in caplog.text
    np.testing.assert_array_equal(again.rows(range(3)), good)  # the rebuilt rows, not the zeros


# ------------------------------------------------------------------ strategies


def test_lora_merge_matches_the_adapted_model(tiny):
    asr = WhisperASR.load(tiny)
    setup = apply_strategy(asr.model, "lora", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in asr.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    feats = torch.randn(2, 80, 3000)
    dec = torch.tensor([asr.prefix_tokens("es") + [70, 71]] * 2)
    with torch.no_grad():
        adapted = asr.model(input_features=feats, decoder_input_ids=dec).logits
        merged_sd = merge_lora_state_dict(asr.model.state_dict(), setup.lora_scaling)
        plain = WhisperASR.load(tiny).model
        assert not torch.allclose(plain(input_features=feats, decoder_input_ids=dec).logits, adapted, atol=1e-3)
        missing, unexpected = plain.load_state_dict(merged_sd, strict=False)
        assert not unexpected and set(missing) <= {"proj_out.weight"}
        merged = plain(input_features=feats, decoder_input_ids=dec).logits
    assert torch.allclose(merged, adapted, atol=1e-4)


@pytest.mark.parametrize("strategy,top_k", [("head", 2), ("top-k", 1), ("top-k", 2)])
def test_frozen_prefix_matches_the_applied_strategy(tiny, strategy, top_k):
    asr = WhisperASR.load(tiny)
    setup = apply_strategy(asr.model, strategy, top_k=top_k)
    assert frozen_prefix(strategy, len(asr.model.model.encoder.layers), top_k) == setup.frozen_stages


def test_dropout_reaches_the_layers_and_only_acts_in_training(tiny):
    asr = WhisperASR.load(tiny)
    assert set_dropout(asr.model, 0.3) == 2 + len(asr.model.model.encoder.layers) + len(asr.model.model.decoder.layers)
    assert all(layer.dropout == 0.3 for layer in asr.model.model.decoder.layers)
    assert asr.model.model.decoder.layers[0].self_attn.dropout == 0.0  # attention dropout is a separate setting
    feats = torch.randn(1, 80, 3000)
    dec = torch.tensor([asr.prefix_tokens("es") + [70, 71]])
    with torch.no_grad():
        asr.model.eval()
        assert torch.equal(asr.model(input_features=feats, decoder_input_ids=dec).logits,
                           asr.model(input_features=feats, decoder_input_ids=dec).logits)
        asr.model.train()
        torch.manual_seed(0)
        a = asr.model(input_features=feats, decoder_input_ids=dec).logits
        b = asr.model(input_features=feats, decoder_input_ids=dec).logits
    assert not torch.allclose(a, b)


EXPECTED_GROUPS = {
    "head": {"decoder"},
    "top-k": {"decoder", "encoder", "encoder.layers.1"},
    "full": {"decoder", "encoder", "encoder.layers.0", "encoder.layers.1"},
}


@pytest.mark.parametrize("strategy", ["head", "top-k", "lora", "full"])
def test_strategy_trains_the_right_parameters(strategy, tiny, corpus, tmp_path):
    out = tmp_path / "run"
    result = train(tiny, corpus["train"], corpus["dev"], out, quick(strategy=strategy, mixed_precision="no"), NORM)
    assert result.steps == 8 and result.stop_reason == "max_steps" and result.strategy == strategy
    curve = losses(result.history_path)
    assert len(curve) == 8 and np.mean(curve[-2:]) < np.mean(curve[:2])  # tiny overfit set: loss goes down
    expected_stage = {"head": 4, "top-k": 2, "lora": 1, "full": 0}[strategy]
    assert result.cache_stage == expected_stage and (result.cache_build_s > 0) == (expected_stage > 0)

    original = load_file(str(tiny / "model.safetensors"))
    trained = {k.removeprefix("whisper."): v for k, v in load_file(str(out / "last" / "model.safetensors")).items()}
    if strategy == "lora":
        base = {k.replace(".base_layer", ""): v for k, v in trained.items() if "lora_" not in k}
        assert all(torch.equal(base[k], original[k]) for k in original if k in base)  # base weights frozen
        assert any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)
        assert result.trainable_params == sum(v.numel() for k, v in trained.items() if "lora_" in k)
    else:
        changed = {k for k in original if k in trained and not torch.equal(original[k], trained[k])}
        frozen = {"head": ("model.encoder.",), "top-k": ("model.encoder.conv", "model.encoder.layers.0."),
                  "full": ("model.encoder.embed_positions",)}[strategy]
        assert not {k for k in changed if k.startswith(frozen)}, "frozen parameters moved"
        assert any(k.startswith("model.decoder.layers.") for k in changed)
        if strategy == "top-k":
            assert any(k.startswith("model.encoder.layers.1.") for k in changed)
        if strategy == "full":
            assert "model.encoder.conv1.weight" in changed
        fresh = WhisperASR.load(tiny)
        setup = apply_strategy(fresh.model, strategy, top_k=1)
        assert set(setup.groups) == EXPECTED_GROUPS[strategy] and result.trainable_params == setup.trainable_params

    best = WhisperASR.load(result.best_dir)  # a plain transformers dir, LoRA merged
    assert not any("lora" in k for k in best.model.state_dict())
    assert json.loads((result.best_dir / "speechtl_train.json").read_text())["step"] == 8
    if strategy == "lora":  # the merged export computes what the adapted model computes
        check = WhisperASR.load(tiny)
        apply_strategy(check.model, "lora", lora_r=4, lora_alpha=8)
        module = train_module(check.model, 0, 0).eval()
        missing = module.load_state_dict(load_file(str(out / "last" / "model.safetensors")), strict=False).missing_keys
        assert set(missing) <= {"whisper.proj_out.weight"}
        feats = torch.randn(1, 80, 3000)
        dec = torch.tensor([check.prefix_tokens("es") + [80, 81, 82]])
        with torch.no_grad():
            ref = check.model(input_features=feats, decoder_input_ids=dec).logits
            got = best.model(input_features=feats, decoder_input_ids=dec).logits
        assert torch.allclose(ref, got, atol=1e-4)


def test_spec_augment_without_cache_keeps_the_encoder_frozen(tiny, corpus, tmp_path):
    config = quick(strategy="head", max_steps=2, eval_every_steps=2, spec_augment=True, cache_encoder=False)
    result = train(tiny, corpus["train"], corpus["dev"], tmp_path / "run", config, NORM)
    assert result.cache_stage == 0 and result.steps == 2
    trained = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    original = load_file(str(tiny / "model.safetensors"))
    assert all(torch.equal(trained["whisper." + k], v) for k, v in original.items() if k.startswith("model.encoder"))


def test_spec_augment_on_cached_states_changes_training(tiny, corpus, tmp_path):
    curves = {}
    for spec in (False, True):
        config = quick(strategy="top-k", top_k=1, max_steps=2, eval_every_steps=2, spec_augment=spec)
        result = train(tiny, corpus["train"], corpus["dev"], tmp_path / f"run-{spec}", config, NORM)
        assert result.cache_stage > 0
        curves[spec] = losses(result.history_path)
    assert curves[True] != curves[False]


def test_prompted_targets_train_and_change_the_losses(tiny, corpus, tmp_path):
    curves = {}
    for share in (0.0, 1.0):
        config = quick(strategy="top-k", top_k=1, max_steps=2, eval_every_steps=2, prompt="hola, gracias",
                       prompt_share=share)
        curves[share] = losses(train(tiny, corpus["train"], corpus["dev"], tmp_path / f"run-{share}", config,
                                     NORM).history_path)
    assert len(curves[1.0]) == 2 and all(math.isfinite(v) for v in curves[1.0]) and curves[1.0] != curves[0.0]


def test_progress_lines_between_evaluations(tiny, corpus, tmp_path, caplog):
    config = quick(strategy="head", max_steps=2, eval_every_steps=2, log_every_steps=1)
    with caplog.at_level(logging.INFO, logger="speechtl.train.loop"):
        train(tiny, corpus["train"], corpus["dev"], tmp_path / "run", config, NORM)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ") and "loss" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["step 1/2", "step 2/2"]
    assert all("utterances/s" in line and "ETA" in line for line in lines)


# ------------------------------------------------------------------ loop control


def test_resume_ends_where_an_uninterrupted_run_ends(corpus, tmp_path):
    model = save_random_whisper(tmp_path / "drop", seed=4, dropout=0.1)  # dropout: RNG state must resume too
    config = quick(strategy="top-k", max_steps=6, grad_accum_steps=2, eval_every_steps=3, eval_at_start=True,
                   warmup_steps=2, mixed_precision="no")
    straight = train(model, corpus["train"], corpus["dev"], tmp_path / "a", config, NORM)

    def crash(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == 4:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        train(model, corpus["train"], corpus["dev"], tmp_path / "b", config, NORM, crash)
    assert json.loads((tmp_path / "b" / "last" / "trainer_state.json").read_text())["state"]["step"] == 3
    with pytest.raises(FileExistsError, match="resume=True"):
        train(model, corpus["train"], corpus["dev"], tmp_path / "b", config, NORM)
    changed = dataclasses.replace(config, learning_rate=1e-3)
    with pytest.raises(ValueError, match="learning_rate"):
        train(model, corpus["train"], corpus["dev"], tmp_path / "b", changed, NORM, resume=True)
    resumed = train(model, corpus["train"], corpus["dev"], tmp_path / "b", config, NORM, resume=True)

    assert resumed.steps == straight.steps == 6
    assert resumed.weights_sha256 == straight.weights_sha256
    assert resumed.best_dev_wer == straight.best_dev_wer and resumed.best_step == straight.best_step
    assert resumed.cache_stage == 2 and resumed.cache_build_s == 0  # the crashed run's cache is reused
    a = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(straight.history_path) == losses(resumed.history_path)


@pytest.mark.parametrize("damage", ["zero-filled", "missing"])
def test_a_corrupt_checkpoint_is_refused_on_resume(tiny, corpus, tmp_path, damage):
    config = quick(strategy="head", max_steps=2, eval_every_steps=1, mixed_precision="no")
    train(tiny, corpus["train"], corpus["dev"], tmp_path / "run", config, NORM)
    weights = tmp_path / "run" / "last" / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(bytes(weights.stat().st_size))  # the right size, every byte zero
    with pytest.raises(ValueError, match=r"model\.safetensors (does not match the digest|is missing)"):
        train(tiny, corpus["train"], corpus["dev"], tmp_path / "run", config, NORM, resume=True)


def test_early_stopping_and_time_budget(tiny, corpus, tmp_path):
    patient = quick(strategy="head", max_steps=50, learning_rate=1e-12, eval_every_steps=1, eval_at_start=True,
                    early_stopping_patience=2)
    result = train(tiny, corpus["train"], corpus["dev"], tmp_path / "stop", patient, NORM)
    assert result.stop_reason == "early_stopping" and result.steps == 2 and result.best_step == 0
    assert result.baseline_dev_wer == result.best_dev_wer

    budget = quick(strategy="head", max_steps=50, max_train_time_s=1e-6)
    result = train(tiny, corpus["train"], corpus["dev"], tmp_path / "budget", budget, NORM)
    assert result.stop_reason == "time_budget" and result.steps == 1
    assert result.best_dir is not None and result.best_step == 1  # the final model is always evaluated


# ------------------------------------------------------------------ several processes


def test_two_processes_share_data_and_end_equal(tiny, corpus, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    worker = Path(__file__).resolve().parents[1] / "accelerate_worker.py"
    report = tmp_path / "report"
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless mpirun is configured (accelerate
    # 1.15); the torchrun-based launcher with ACCELERATE_USE_CPU gives two CPU processes on gloo, GPU or not.
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", str(worker),
           str(tiny), str(corpus["train"]), str(corpus["dev"]), str(tmp_path / "out"), str(report)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["num_processes"] == 2 and len(r["steps"]) == 4 for r in ranks)
    for epoch in (0, 1):  # 8 utterances, batch 2, 2 processes: 2 steps per epoch each
        seen = [{i for step in r["steps"][2 * epoch:2 * epoch + 2] for i in step} for r in ranks]
        assert not seen[0] & seen[1], "both processes trained on the same utterances"
        assert seen[0] | seen[1] == {f"u{i}" for i in range(8)}
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["best_dev_wer"] == ranks[1]["best_dev_wer"]
    assert (tmp_path / "out" / "best" / "model.safetensors").is_file()


@pytest.mark.parametrize("grad_stage", [0, 2])
def test_trimmed_padding_is_never_seen(tiny, grad_stage):
    """With encoder_frames, the loss reads only those positions: what lies after them does not change it."""
    asr = WhisperASR.load(tiny)
    module = train_module(asr.model, 0, grad_stage).eval()
    positions = asr.model.config.max_source_positions
    feats = torch.randn(2, 80, 2 * positions)
    dec = torch.tensor([asr.prefix_tokens("es") + [80, 81]] * 2)
    labels = torch.cat([dec[:, 1:], torch.full((2, 1), asr.eot_id)], dim=1)
    hidden = module.encoder_output(feats)
    assert torch.equal(module.encoder_output(feats, positions), hidden)  # the whole window: no change
    trimmed = module.encoder_output(feats, 10)
    assert trimmed.shape == (2, 10, hidden.shape[-1]) and not torch.allclose(trimmed, hidden[:, :10])
    if grad_stage:  # a cached input: positions past the trim are never read
        rows = torch.randn(2, positions, asr.model.config.d_model)  # hidden states entering stage 2
        module = train_module(asr.model, 2, grad_stage).eval()
        noisy = rows.clone()
        noisy[:, 10:] = torch.randn_like(noisy[:, 10:]) * 100
        assert torch.allclose(module(rows, dec, labels, encoder_frames=10), module(noisy, dec, labels, encoder_frames=10))
        assert not torch.allclose(module(rows, dec, labels), module(noisy, dec, labels))


def test_collator_cuts_rows_to_the_batch_window(tiny):
    asr = WhisperASR.load(tiny)
    positions = asr.model.config.max_source_positions  # over a 30-s window
    tokens = asr.token_sequences(["hola", "adiós"], "es")
    rows = [{"index": i, "input": np.zeros((positions, 8), np.float16), "tokens": t, "epoch": 0, "seconds": s}
            for i, (t, s) in enumerate(zip(tokens, [2.0, 9.5]))]
    assert "encoder_frames" not in WhisperCollator(asr, num_prefix=4, from_audio=False)(rows)  # 30-s windows
    asr.window_step_s = 10.0
    assert WhisperCollator(asr, num_prefix=4, from_audio=False)(rows)["encoder_frames"] == positions // 3
    rows[1]["seconds"] = 10.5  # a 20-s window next to a 10-s one: the sampler should have kept them apart
    with pytest.raises(ValueError, match="mixes encoder windows"):
        WhisperCollator(asr, num_prefix=4, from_audio=False)(rows)
    asr.window_step_s = 15.0
    assert WhisperCollator(asr, num_prefix=4, from_audio=False)(rows)["encoder_frames"] == positions // 2


