"""Where a Whisper training step's time goes, against the machine's matmul peak measured in the same run.

Baseline (named, measured in the same run): a plain ``torch.matmul`` of two 1024 x 1024 matrices in fp32 and
in bf16, the practical peak of this machine's CPU (or GPU) for dense math; each piece of the step is given as
a share of the larger of the two.

The pieces, each timed on the same batch (``--batch`` clips, ``--tokens`` target tokens, 30-s windows:
3000 mel frames, 1500 encoder positions) and counted by ``torch.utils.flop_counter.FlopCounterMode``:

- the encoder's conv stem and one encoder layer, forward only (what the encoder cache saves);
- one encoder layer, forward and backward (what each trained top layer costs every step);
- the decoder, forward and backward on the encoder output, frozen (``head``) or trained (the others);
- an AdamW step over the trainable parameters of each strategy;
- the same encoder layer and the decoder on ``--short-frames`` positions instead of 1500: what training on
  fewer padded frames would save (this script does not say what it does to WER).

Then, per strategy, the step as speechtl runs it (the frozen prefix read from the encoder cache): ``head`` =
decoder + AdamW; ``top-k`` = k layers + decoder + AdamW; ``full`` = stem + every layer + decoder + AdamW, all
with backward. The step figures are sums of the pieces measured here, not a timed training run (bench/train.py
times real runs). Prints milliseconds, GFLOP, achieved GFLOP/s and the share of the peak.

Run: ``python bench/train_profile.py [--model whisper-base] [--batch 8] [--tokens 32] [--top-k 3]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from speechtl.models.encoder_stages import run_encoder
from speechtl.models.registry import resolve
from speechtl.models.whisper import WhisperASR


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn`` (matmuls, convolutions, attention) as torch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(repeats: int) -> dict[str, float]:
    """GFLOP/s of a 1024^3 matmul in fp32 and bf16, the fastest of ``repeats`` calls (a peak: on a shared
    machine the median of a few calls varied from 62 to 117 GFLOP/s between runs)."""
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        torch.matmul(a, b)
        fastest = min(timed(lambda a=a, b=b: torch.matmul(a, b), 1) for _ in range(repeats))
        out[name] = 2 * 1024 ** 3 / fastest / 1e9
    return out


def pieces(asr: WhisperASR, args: argparse.Namespace) -> dict[str, tuple[float, int]]:
    """Seconds and FLOPs of each piece of a step (see the module docstring)."""
    import torch

    model = asr.model
    model.train()
    n_layers, d_model = len(model.model.encoder.layers), model.config.d_model
    mel = torch.randn(args.batch, model.config.num_mel_bins, 3000)
    with torch.no_grad():
        stem_out = run_encoder(model, mel, 0, 1)
    hidden = torch.randn(args.batch, 1500, d_model)
    short = torch.randn(args.batch, args.short_frames, d_model)
    labels = torch.randint(0, model.config.vocab_size - 1, (args.batch, args.tokens))

    def layer_fwd() -> None:
        with torch.no_grad():
            run_encoder(model, hidden, n_layers, n_layers + 1)

    def layer_bwd(x: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            run_encoder(model, x.detach().requires_grad_(), n_layers, n_layers + 1).float().pow(2).mean().backward()
        return step

    def decoder_bwd(x: torch.Tensor, grad_in: bool) -> Callable[[], None]:
        def step() -> None:
            out = model.model.decoder(input_ids=labels, encoder_hidden_states=x.detach().requires_grad_(grad_in))
            model.proj_out(out.last_hidden_state).logsumexp(-1).mean().backward()
        return step

    def stem_fwd() -> None:
        with torch.no_grad():
            run_encoder(model, mel, 0, 1)

    def stem_bwd() -> None:
        run_encoder(model, mel, 0, 1).pow(2).mean().backward()

    assert stem_out.shape[1] == 1500
    jobs = {"encoder stem, forward": stem_fwd, "encoder stem, forward + backward": stem_bwd,
            "encoder layer, forward": layer_fwd, "encoder layer, forward + backward": layer_bwd(hidden),
            f"encoder layer on {args.short_frames} positions, forward + backward": layer_bwd(short),
            "decoder, forward + backward (encoder output frozen)": decoder_bwd(hidden, False),
            "decoder, forward + backward (and into the encoder)": decoder_bwd(hidden, True),
            f"decoder on {args.short_frames} positions, forward + backward (frozen)": decoder_bwd(short, False)}
    out = {}
    for name, fn in jobs.items():
        out[name] = (timed(fn, args.repeats), flops(fn))
        model.zero_grad(set_to_none=True)
    return out


def adamw_seconds(model: object, names: Callable[[str], bool], repeats: int) -> tuple[float, int]:
    """Seconds of one AdamW step over the parameters whose names pass ``names``, and their count."""
    import torch

    params = [p for n, p in model.named_parameters() if names(n)]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    seconds = timed(optimizer.step, repeats)
    for p in params:
        p.grad = None
    return seconds, sum(p.numel() for p in params)


def strategy_steps(asr: WhisperASR, parts: dict[str, tuple[float, int]], top_k: int,
                   repeats: int) -> dict[str, tuple[float, int, int]]:
    """Per strategy: estimated step seconds, FLOPs and trainable parameters (sums of the measured pieces)."""
    n_layers = len(asr.model.model.encoder.layers)
    top = {f"model.encoder.layers.{i}." for i in range(n_layers - top_k, n_layers)}
    trains = {"head": lambda n: n.startswith("model.decoder."),
              f"top-{top_k}": lambda n: n.startswith("model.decoder.") or n.startswith("model.encoder.layer_norm")
              or any(n.startswith(t) for t in top),
              "full": lambda n: not n.startswith("model.encoder.embed_positions")}
    layer, stem = parts["encoder layer, forward + backward"], parts["encoder stem, forward + backward"]
    frozen = parts["decoder, forward + backward (encoder output frozen)"]
    into = parts["decoder, forward + backward (and into the encoder)"]
    counts = {"head": (0, False), f"top-{top_k}": (top_k, False), "full": (n_layers, True)}
    out = {}
    for name, names in trains.items():
        k, with_stem = counts[name]
        decoder = frozen if k == 0 else into
        adam_s, n_params = adamw_seconds(asr.model, names, repeats)
        seconds = k * layer[0] + decoder[0] + adam_s + (stem[0] if with_stem else 0.0)
        total = k * layer[1] + decoder[1] + (stem[1] if with_stem else 0)
        out[name] = (seconds, total, n_params)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32, help="target tokens per clip")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--short-frames", type=int, default=300, help="encoder positions of the fewer-frames case")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch

    asr = WhisperASR.load(resolve(args.model).hf_dir)
    peak = matmul_peak(args.repeats * 3)
    best = max(peak.values())
    print(f"model {args.model}; batch {args.batch}, {args.tokens} tokens, {torch.get_num_threads()} threads; "
          f"matmul peak fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s (baseline: {best:.1f})")
    parts = pieces(asr, args)
    print(f"\n{'piece (one batch)':<58} {'ms':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for name, (seconds, n) in parts.items():
        print(f"{name:<58} {seconds * 1e3:>8.0f} {n / 1e9:>8.1f} {n / seconds / 1e9:>8.1f} "
              f"{n / seconds / 1e9 / best:>8.1%}")
    steps = strategy_steps(asr, parts, args.top_k, args.repeats)
    print(f"\n{'strategy step (sum of pieces)':<32} {'ms':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'of peak':>8} "
          f"{'trainable':>12}")
    for name, (seconds, n, n_params) in steps.items():
        print(f"{name:<32} {seconds * 1e3:>8.0f} {n / 1e9:>8.1f} {n / seconds / 1e9:>8.1f} "
              f"{n / seconds / 1e9 / best:>8.1%} {n_params:>12,}")
    full_layer = parts["encoder layer, forward + backward"][0]
    short_layer = parts[f"encoder layer on {args.short_frames} positions, forward + backward"][0]
    full_dec = parts["decoder, forward + backward (encoder output frozen)"][0]
    short_dec = parts[f"decoder on {args.short_frames} positions, forward + backward (frozen)"][0]
    print(f"\n1500 against {args.short_frames} encoder positions: a trained encoder layer {full_layer * 1e3:.0f} "
          f"against {short_layer * 1e3:.0f} ms (x{full_layer / short_layer:.1f}), the decoder (cross-attention "
          f"keys and values on every position) {full_dec * 1e3:.0f} against {short_dec * 1e3:.0f} ms "
          f"(x{full_dec / short_dec:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
