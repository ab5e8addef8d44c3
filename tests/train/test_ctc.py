"""CTC route: architecture detection, each strategy for a few steps on tiny random models, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from safetensors.torch import load_file  # noqa: E402
from tone_corpus import SR, tone_rows  # noqa: E402

from speechtl.data.manifest import write_jsonl  # noqa: E402
from speechtl.models.ctc.vocab import load_vocab  # noqa: E402
from speechtl.models.wav2vec2 import CtcASR, architecture  # noqa: E402
from speechtl.models.random_whisper import save_random_whisper  # noqa: E402
from speechtl.text.normalize import get_normalizer  # noqa: E402
from speechtl.train.config import TrainConfig  # noqa: E402
from speechtl.train.loop import train  # noqa: E402
from speechtl.train.parts import TrainEvent  # noqa: E402
from speechtl.train.strategies import apply_ctc_strategy  # noqa: E402

TRAIN = ["hola", "buenos días", "gracias", "adiós", "por favor", "sí señor", "buenas noches", "hasta luego"]
NORM = get_normalizer("es")  # scoring normalizer (strips accents); labels keep them


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ctc_corpus")
    rows = tone_rows(root, [*TRAIN, "zorro"])
    write_jsonl(root / "train.jsonl", rows[:8])
    write_jsonl(root / "dev.jsonl", [rows[0], rows[8]])  # "zorro": z is in no train transcript
    return {"train": root / "train.jsonl", "dev": root / "dev.jsonl"}


def _save_wav2vec2(out: Path, **overrides) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                    conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=2, vocab_size=12, feat_extract_norm="layer",
                    do_stable_layer_norm=True, mask_time_prob=0.0)
    settings.update(overrides)
    torch.manual_seed(3)
    Wav2Vec2ForCTC(Wav2Vec2Config(**settings)).save_pretrained(out)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def w2v2(tmp_path_factory) -> Path:
    return _save_wav2vec2(tmp_path_factory.mktemp("w2v2") / "tiny", adapter_attn_dim=8)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory) -> Path:
    return save_random_whisper(tmp_path_factory.mktemp("whisper") / "tiny", seed=2)


def quick(**overrides) -> TrainConfig:
    settings = dict(route="ctc", max_steps=8, batch_size=2, learning_rate=3e-3, head_learning_rate=3e-2,
                    warmup_steps=1, eval_every_steps=8, eval_at_start=False, log_every_steps=1, top_k=1,
                    mixed_precision="no")
    settings.update(overrides)
    return TrainConfig(**settings)


def _losses(history: Path) -> list[float]:
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    return [r["loss"] for r in rows if r["loss"] is not None]


def test_architecture_picks_the_route(w2v2, whisper, tmp_path):
    assert architecture(whisper) == "seq2seq" and architecture(w2v2) == "ctc"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="field 'model_type' is 'bert'"):
        architecture(tmp_path)
    with pytest.raises(ValueError, match="no CTC vocabulary of its own"):
        CtcASR.load(w2v2, lang="es")  # a random head without vocab.json is no baseline
    with pytest.raises(ValueError, match="has no CTC head"):
        CtcASR.load(whisper, lang="es")


def test_adapters_need_a_checkpoint_with_them(tmp_path):
    from speechtl.models.ctc.vocab import build_vocab

    plain = _save_wav2vec2(tmp_path / "plain")
    asr = CtcASR.load(plain, lang="es", vocab=build_vocab([("a", "hola")], "es"))
    with pytest.raises(ValueError, match="adapter_attn_dim"):
        apply_ctc_strategy(asr, "adapters")


FROZEN = {  # parameter-name prefixes that must not move, per strategy (wav2vec2 kind)
    "head": ("wav2vec2.",),
    "top-k": ("wav2vec2.feature_extractor.", "wav2vec2.encoder.layers.0."),
    "full": ("wav2vec2.feature_extractor.",),
    "adapters": ("wav2vec2.feature_extractor.", "wav2vec2.encoder.layers.0.attention."),
}


@pytest.mark.parametrize("strategy", ["head", "top-k", "full", "adapters"])
def test_wav2vec2_strategies_train_the_right_parameters(strategy, w2v2, corpus, tmp_path):
    out = tmp_path / "run"
    result = train(w2v2, corpus["train"], corpus["dev"], out, quick(strategy=strategy), NORM)
    assert result.route == "ctc" and result.steps == 8 and result.strategy == strategy
    curve = _losses(result.history_path)
    assert len(curve) == 8 and np.mean(curve[-2:]) < np.mean(curve[:2])

    vocab = load_vocab(out / "vocab.json", "es")  # built from train only: dev's "z" is not in it
    assert "z" not in vocab.symbols and "í" in vocab.symbols and "ñ" in vocab.symbols
    original = load_file(str(w2v2 / "model.safetensors"))
    trained = {k.removeprefix("net."): v for k, v in load_file(str(out / "last" / "model.safetensors")).items()}
    changed = {k for k in original if k in trained and not torch.equal(original[k], trained[k])}
    assert not {k for k in changed if k.startswith(FROZEN[strategy])}, "frozen parameters moved"
    assert trained["lm_head.weight"].shape[0] == len(vocab.symbols)
    if strategy == "top-k":
        assert any(k.startswith("wav2vec2.encoder.layers.1.") for k in changed)
    if strategy == "adapters":
        assert all(".adapter_layer." in k for k in changed - {"lm_head.weight", "lm_head.bias"})
        assert any(".adapter_layer." in k for k in changed)

    best = CtcASR.load(result.best_dir, lang="es")  # the saved model reloads with its vocabulary
    assert best.vocab.symbols == vocab.symbols
    hyps = best.transcribe([np.zeros(8000, np.float32), np.ones(12000, np.float32) * 0.1], "es")
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)


@pytest.mark.parametrize(("strategy", "stage"), [("head", 4), ("top-k", 2), ("full", 1)])
def test_whisper_encoder_ctc_trains_from_the_cache(strategy, stage, whisper, corpus, tmp_path):
    out = tmp_path / "run"
    result = train(whisper, corpus["train"], corpus["dev"], out, quick(strategy=strategy), NORM)
    assert result.route == "ctc" and result.cache_stage == stage and result.cache_build_s > 0
    curve = _losses(result.history_path)
    assert np.mean(curve[-2:]) < np.mean(curve[:2])
    original = load_file(str(whisper / "model.safetensors"))
    trained = load_file(str(result.best_dir / "model.safetensors"))
    assert not any(k.startswith("model.decoder") for k in trained)  # the CTC model keeps the encoder only
    moved = {k for k in trained if k in original and not torch.equal(original[k], trained[k])}
    if strategy == "head":
        assert not moved
    else:
        assert moved and not {k for k in moved if k.startswith(("model.encoder.conv", "model.encoder.embed"))}

    # decoding from cached encoder rows and from audio agree
    best = CtcASR.load(result.best_dir, lang="es")
    audio = [np.asarray(sf.read(p)[0], np.float32) for p in sorted(Path(corpus["train"]).parent.glob("u[0-2].wav"))]
    feats = best.features(audio)
    durations = [len(a) / SR for a in audio]
    assert best.transcribe(audio, "es") == best.transcribe_encoded(best.encode(feats), "es", durations_s=durations)


def test_ctc_resume_ends_where_an_uninterrupted_run_ends(w2v2, corpus, tmp_path):
    config = quick(strategy="top-k", max_steps=6, eval_every_steps=3, eval_at_start=True)
    straight = train(w2v2, corpus["train"], corpus["dev"], tmp_path / "a", config, NORM)

    def crash(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == 4:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        train(w2v2, corpus["train"], corpus["dev"], tmp_path / "b", config, NORM, crash)
    resumed = train(w2v2, corpus["train"], corpus["dev"], tmp_path / "b", config, NORM, resume=True)
    assert resumed.steps == straight.steps == 6
    assert resumed.weights_sha256 == straight.weights_sha256
    assert _losses(straight.history_path) == _losses(resumed.history_path)


def test_lora_is_refused_on_the_ctc_route(w2v2, corpus, tmp_path):
    with pytest.raises(ValueError, match="lora"):
        train(w2v2, corpus["train"], corpus["dev"], tmp_path / "run", quick(strategy="lora"), NORM)
