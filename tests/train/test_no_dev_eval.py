"""eval_every_steps: 0 trains without dev decoding and keeps the last step as the checkpoint."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from safetensors.torch import load_file  # noqa: E402
from tone_corpus import tone_rows  # noqa: E402

from speechtl.data.manifest import write_jsonl  # noqa: E402
from speechtl.models.random_whisper import save_random_whisper  # noqa: E402
from speechtl.text.normalize import get_normalizer  # noqa: E402
from speechtl.train.config import TrainConfig  # noqa: E402
from speechtl.train.loop import train  # noqa: E402


def test_no_dev_evaluation_keeps_the_last_step(tmp_path):
    rows = tone_rows(tmp_path, ["hola", "gracias", "adiós", "por favor"])
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "dev.jsonl", rows[:2])
    model = save_random_whisper(tmp_path / "tiny", seed=2)
    config = TrainConfig(strategy="head", max_steps=3, batch_size=2, learning_rate=3e-3, warmup_steps=1,
                         eval_every_steps=0, eval_at_start=False, early_stopping_patience=1)
    result = train(model, tmp_path / "train.jsonl", tmp_path / "dev.jsonl", tmp_path / "ckpt", config,
                   get_normalizer("es"))
    assert result.steps == 3 and result.stop_reason == "max_steps"  # patience never fires without evaluations
    assert result.best_dev_wer is None and result.best_step == 3
    history = [json.loads(line) for line in result.history_path.read_text().splitlines()]
    assert all(row["dev_wer"] is None for row in history)  # nothing was decoded
    best = load_file(result.best_dir / "model.safetensors")
    assert (tmp_path / "ckpt" / "last").is_dir()  # the resumable state is still written at the end
    base = load_file(model / "model.safetensors")
    moved = [k for k in best if k in base and best[k].shape == base[k].shape and not torch.equal(best[k], base[k])]
    assert moved  # the checkpoint holds the trained weights, not the untrained model


def test_no_dev_evaluation_refuses_eval_at_start():
    with pytest.raises(ValueError, match="TrainConfig.eval_at_start needs dev evaluations during training"):
        TrainConfig(eval_every_steps=0, eval_at_start=True)
    with pytest.raises(ValueError, match="TrainConfig.eval_every_steps"):
        TrainConfig(eval_every_steps=-1)
