"""Training throughput and dev WER per strategy, against a plain transformers Seq2SeqTrainer.

Baseline (named, measured in the same run): the common public recipe, a
``Seq2SeqTrainer`` full fine-tune of the same model on the same utterances
(log-mel features computed per batch, the full encoder run every step).

Each system gets the same wall-clock training budget (``--budget-s``), the
same batch size and the same data; then its model decodes the dev manifest
greedily and is scored with the same normalizer. speechtl's time includes
building its encoder cache (reported separately too). Prints utterances per
second of training, the ratio to the baseline, and the dev WER reached.

Achieved GFLOP/s per system: the floating-point operations of one training
step, counted by ``torch.utils.flop_counter.FlopCounterMode`` as the
difference between a run of two steps and a run of one (the same cache reads,
setup and dev decoding cancel out: what is left is the second batch's forward,
backward and optimizer step), times the steps of the budgeted run, over its
training seconds; and that rate as a share of the machine's matmul peak
(``torch.matmul`` of 1024 x 1024 matrices in fp32 and bf16, the larger,
measured in the same run: bench/train_profile.py's ``matmul_peak``).
``--window-step-s 10`` trains speechtl's systems on encoder windows sized to
the clip (speechtl.models.windows) instead of 30-s windows.

Run: ``python bench/train.py --train runs/es/data/train.jsonl --dev runs/es/data/dev.jsonl``
(after ``make adapt LANG=es``), or with any manifests; the model defaults to
the bundled whisper-base.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from speechtl.audio import load as load_audio
from speechtl.data.manifest import read_manifest, write_jsonl
from speechtl.evaluate.scoring import score, scoring_normalizer
from speechtl.models.registry import resolve
from speechtl.models.whisper import WhisperASR
from speechtl.train.config import TrainConfig, resolve_mixed_precision
from speechtl.train.loop import train
from train_profile import matmul_peak  # bench/ is on the path when this script runs


def dev_wer(model_dir: Path, dev, lang: str) -> float:
    asr = WhisperASR.load(model_dir)
    hyps = asr.transcribe([load_audio(u.audio_filepath) for u in dev], lang, batch_size=8)
    return score([u.text for u in dev], hyps, scoring_normalizer(lang)).wer


def step_flops(run: Callable[[int], object]) -> int:
    """FLOPs of one training step: ``run(steps)`` trains from scratch; two steps counted less one step counted."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            run(steps)
        counts.append(counter.get_total_flops())
    return counts[1] - counts[0]


def speechtl_config(strategy: str, args, *, max_steps: int = 10_000, budget_s: float | None = None) -> TrainConfig:
    return TrainConfig(
        strategy=strategy, lang=args.lang, batch_size=args.batch_size, warmup_steps=args.warmup,
        max_steps=max_steps, max_train_time_s=budget_s, eval_at_start=False,
        eval_every_steps=10_000 if budget_s else 0,  # counted runs: no dev decoding, whose length varies
        early_stopping_patience=None, seed=args.seed, window_step_s=args.window_step_s,
        learning_rate=args.full_lr if strategy == "full" else None,
    )  # fmt: skip


def run_seq2seq_trainer(model_dir: Path, train_utts, out: Path, args, max_steps: int = 10_000,
                        budget_s: float | None = None) -> tuple[float, int, Path]:
    """The baseline: transformers Seq2SeqTrainer, full fine-tune, stopped at ``budget_s`` of wall time (None: no
    budget) or after ``max_steps``."""
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    asr = WhisperASR.load(model_dir)
    prefix = asr.prefix_tokens(args.lang)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(train_utts)

        def __getitem__(self, i):
            return train_utts[i]

    def collate(utts):
        feats = asr.processor.feature_extractor([load_audio(u.audio_filepath) for u in utts], sampling_rate=16000,
                                                return_tensors="pt").input_features
        seqs = [prefix + asr.tokenizer.encode(" " + u.text, add_special_tokens=False) + [asr.eot_id] for u in utts]
        width = max(map(len, seqs))
        labels = torch.full((len(seqs), width - 1), -100, dtype=torch.long)
        dec = torch.full((len(seqs), width - 1), asr.eot_id, dtype=torch.long)
        for row, seq in enumerate(seqs):
            dec[row, : len(seq) - 1] = torch.tensor(seq[:-1])
            labels[row, len(prefix) - 1 : len(seq) - 1] = torch.tensor(seq[len(prefix):])
        return {"input_features": feats, "decoder_input_ids": dec, "labels": labels}

    class Budget(TrainerCallback):
        def __init__(self):
            self.start = None
            self.steps = 0

        def on_train_begin(self, a, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.steps = state.global_step
            if budget_s is not None and time.perf_counter() - self.start >= budget_s:
                control.should_training_stop = True

    budget = Budget()
    targs = Seq2SeqTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, learning_rate=args.full_lr,
        warmup_steps=args.warmup, max_steps=max_steps, lr_scheduler_type="linear", save_strategy="no", report_to=[],
        logging_steps=10, bf16=resolve_mixed_precision("auto", asr.device) == "bf16", use_cpu=True,
        remove_unused_columns=False, dataloader_num_workers=0, seed=args.seed,
    )  # fmt: skip
    trainer = Seq2SeqTrainer(model=asr.model, args=targs, train_dataset=Data(), data_collator=collate,
                             callbacks=[budget])
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    best = out / "final"
    asr.save(best)
    return train_s, budget.steps, best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--train", required=True, help="training manifest")
    p.add_argument("--dev", required=True, help="dev manifest")
    p.add_argument("--lang", default="es")
    p.add_argument("--max-train", type=int, default=96, help="training utterances used (seeded subset)")
    p.add_argument("--max-dev", type=int, default=24)
    p.add_argument("--budget-s", type=float, default=90.0, help="training wall time per system")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--full-lr", type=float, default=1e-5, help="learning rate of full fine-tunes")
    p.add_argument("--strategies", default="head,top-k,lora,full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window-step-s", type=float, default=None, help="speechtl: encoder windows sized to the clip")
    args = p.parse_args()

    rng = random.Random(args.seed)
    train_utts = read_manifest(args.train)
    dev = read_manifest(args.dev)
    train_utts = rng.sample(train_utts, min(args.max_train, len(train_utts)))
    dev = rng.sample(dev, min(args.max_dev, len(dev)))
    model_dir = resolve(args.model).hf_dir
    rows = []
    with tempfile.TemporaryDirectory(prefix="speechtl-bench-train-") as tmp:
        tmp = Path(tmp)
        write_jsonl(tmp / "train.jsonl", train_utts)
        write_jsonl(tmp / "dev.jsonl", dev)
        print(f"model {args.model}; {len(train_utts)} train / {len(dev)} dev utterances; "
              f"{args.budget_s:.0f} s training budget per system; batch {args.batch_size}", flush=True)
        peak = max(matmul_peak(9).values())
        print(f"matmul peak {peak:.1f} GFLOP/s (the larger of fp32 and bf16)", flush=True)
        base_wer = dev_wer(model_dir, dev, args.lang)
        print(f"untrained dev WER {base_wer:.1%}", flush=True)

        train_s, steps, best = run_seq2seq_trainer(model_dir, train_utts, tmp / "seq2seq", args, budget_s=args.budget_s)
        flop = step_flops(lambda n: run_seq2seq_trainer(model_dir, train_utts, tmp / f"seq2seq-{n}", args, n))
        rows.append({"system": "baseline: Seq2SeqTrainer full", "utt_per_s": steps * args.batch_size / train_s,
                     "steps": steps, "cache_s": 0.0, "dev_wer": dev_wer(best, dev, args.lang),
                     "gflop_per_s": flop * steps / train_s / 1e9})
        print(json.dumps(rows[-1]), flush=True)

        def run(strategy: str, out: Path, config: TrainConfig):
            return train(model_dir, tmp / "train.jsonl", tmp / "dev.jsonl", out, config,
                         scoring_normalizer(args.lang))

        for strategy in args.strategies.split(","):
            result = run(strategy, tmp / strategy, speechtl_config(strategy, args, budget_s=args.budget_s))
            flop = step_flops(lambda n, s=strategy: run(s, tmp / f"{s}-{n}", speechtl_config(s, args, max_steps=n)))
            seconds = result.steps * args.batch_size / result.train_utterances_per_s
            rows.append({"system": f"speechtl {strategy}", "utt_per_s": result.train_utterances_per_s,
                         "steps": result.steps, "cache_s": result.cache_build_s,
                         "dev_wer": result.best_dev_wer, "trainable_params": result.trainable_params,
                         "gflop_per_s": flop * result.steps / seconds / 1e9})
            print(json.dumps(rows[-1]), flush=True)

    base = rows[0]["utt_per_s"]
    print(f"\n{'system':<32} {'utt/s':>7} {'x baseline':>10} {'steps':>6} {'cache s':>8} {'dev WER':>8} "
          f"{'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        print(f"{r['system']:<32} {r['utt_per_s']:>7.2f} {r['utt_per_s'] / base:>10.2f} {r['steps']:>6} "
              f"{r['cache_s']:>8.1f} {r['dev_wer']:>8.1%} {r['gflop_per_s']:>8.1f} {r['gflop_per_s'] / peak:>8.1%}")
    print(f"(untrained dev WER {base_wer:.1%}; same wall-clock budget, data, batch size and normalizer for all; "
          "speechtl's cache build time is outside its budget and listed; GFLOP/s: one step's counted FLOPs times "
          f"the steps, over the training seconds, against the matmul peak of {peak:.1f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
