"""Random-weight Whisper models with a byte-level tokenizer, for tests and benchmarks (no hub needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechtl.models.whisper import SPECIALS, WhisperASR, _deps, complete_generation_config


def byte_level_tokenizer(num_languages: int = 99) -> Any:
    """A Whisper tokenizer over the 256 byte symbols plus Whisper's special tokens (no merges)."""
    _deps()
    from tokenizers import AddedToken, pre_tokenizers
    from transformers import WhisperTokenizer
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    tok = WhisperTokenizer(vocab=vocab, merges=[])
    specials = ["<|startoftranscript|>"] + [f"<|{code}|>" for code in list(LANGUAGES)[:num_languages]]
    tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in [*specials, *SPECIALS]],
                   special_tokens=True)
    return tok


def save_random_whisper(out_dir: Path | str, *, tokenizer_dir: Path | str | None = None, seed: int = 0,
                        **config: Any) -> Path:
    """Save a random-weight Whisper (model, processor, generation config) to ``out_dir``.

    ``config`` overrides WhisperConfig fields (defaults: a tiny 2+2-layer
    model, d_model 64). The tokenizer is loaded from ``tokenizer_dir`` or is
    :func:`byte_level_tokenizer`; ``vocab_size`` defaults to its size.
    """
    torch, tf = _deps()
    tok = tf.WhisperTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else byte_level_tokenizer()
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    space = tok.encode(" ", add_special_tokens=False)
    settings: dict[str, Any] = {
        "vocab_size": len(tok), "num_mel_bins": 80, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
        "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 128,
        "decoder_ffn_dim": 128, "max_source_positions": 1500, "max_target_positions": 448,
        "pad_token_id": eot, "bos_token_id": eot, "eos_token_id": eot, "decoder_start_token_id": sot,
        "begin_suppress_tokens": [*space, eot], "suppress_tokens": [],
    }
    settings.update(config)
    torch.manual_seed(seed)
    model = tf.WhisperForConditionalGeneration(tf.WhisperConfig(**settings)).eval()
    processor = tf.WhisperProcessor(
        feature_extractor=tf.WhisperFeatureExtractor(feature_size=settings["num_mel_bins"]), tokenizer=tok)
    gen = complete_generation_config(tf.GenerationConfig(
        max_length=settings["max_target_positions"], begin_suppress_tokens=settings["begin_suppress_tokens"],
        suppress_tokens=settings["suppress_tokens"], bos_token_id=eot), tok)
    asr = WhisperASR(model, processor, gen)
    asr.save(out_dir)
    return Path(out_dir)
