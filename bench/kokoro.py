"""Kokoro-82M synthesis speed on this CPU: onnxruntime threads, processes and session options.

Baseline (named, measured in the same run): Kokoro as ``speechtl.data.synth.corpus`` runs it with the recipes'
``num_workers: 2`` on a 2-core CPU: two forked worker processes, each with its own session of
``kokoro.session()`` (int8 model, intra_op 1 thread, inter_op 1, ORT_SEQUENTIAL, ORT's default graph
optimization ORT_ENABLE_ALL). Every variant speaks the same ``--sentences`` sentences of ``--text`` through
``kokoro.synthesize`` (espeak-ng phonemes included), voice i % 12 of ``voice_specs(12, 0)`` (the
es-medical voices: blends with speed and pitch), after one untimed warm-up call in every process.

Prints per variant: wall seconds per sentence (throughput of all its processes), the real-time factor
(wall / audio seconds), the speed-up against the baseline, CPU seconds per sentence (steadier than wall
when something else loads the CPU), the share of time inside ``session.run``, and how its audio compares
with the baseline's (length ratio; worst max abs sample difference). The baseline runs again last, to
show how much the machine's load drifted during the run.

Run: ``python bench/kokoro.py [--sentences 12] [--variants base 1x1 ...] [--model fp32=PATH]``; ``--model``
adds a variant with another ONNX file (same inputs), e.g. the int8 model with its convolutions dequantized.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from speechtl.data.synth import kokoro
from speechtl.data.synth.corpus import read_sentences

ROOT = Path(__file__).resolve().parent.parent
WARMUP = "Buenos días, ¿cómo se encuentra hoy?"
# name -> (processes, intra-op threads, session option overrides, config entries)
VARIANTS = {
    "base": (2, 1, {}, {}),
    "1x1": (1, 1, {}, {}),
    "1x2": (1, 2, {}, {}),
    "1x2-nospin": (1, 2, {}, {"session.intra_op.allow_spinning": "0"}),
    "no-arena": (2, 1, {"enable_cpu_mem_arena": False, "enable_mem_pattern": False}, {}),
    "denormal0": (2, 1, {}, {"session.set_denormal_as_zero": "1"}),
    "opt-basic": (2, 1, {"graph_optimization_level": "ORT_ENABLE_BASIC"}, {}),
}
_state: dict = {}


def make_session(model: str, threads: int, options: dict, config: dict):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in options.items():
        if key == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, value)
        setattr(opts, key, value)
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class TimedSession:
    """Wraps an onnxruntime session, adding up the seconds spent in ``run``."""

    def __init__(self, sess) -> None:
        self.sess, self.seconds = sess, 0.0

    def get_inputs(self):
        return self.sess.get_inputs()

    def run(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.sess.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t


def _init(model: str, threads: int, options: dict, config: dict, barrier) -> None:
    kokoro._session = TimedSession(make_session(model, threads, options, config))
    kokoro.synthesize(WARMUP, _state["voices"][0], "es")
    kokoro._session.seconds = 0.0
    barrier.wait()


def _cpu() -> float:
    t = os.times()  # this process (all its threads) and its waited-for children (espeak-ng)
    return t.user + t.system + t.children_user + t.children_system


def _speak(i: int) -> tuple[int, np.ndarray, float, float]:
    before, cpu = kokoro._session.seconds, _cpu()
    audio, _ = kokoro.synthesize(_state["texts"][i], _state["voices"][i % len(_state["voices"])], "es")
    return i, audio, kokoro._session.seconds - before, _cpu() - cpu


def measure(model: str, procs: int, threads: int, options: dict, config: dict) -> tuple[float, float, float, list]:
    """(wall seconds, seconds inside session.run and CPU seconds, both summed over processes, audio per sentence)."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs + 1)
    with ctx.Pool(procs, initializer=_init, initargs=(model, threads, options, config, barrier)) as pool:
        barrier.wait()  # every worker has its session and has done its warm-up call
        t = time.perf_counter()
        results = list(pool.imap_unordered(_speak, range(len(_state["texts"]))))
        wall = time.perf_counter() - t
    results.sort(key=lambda r: r[0])
    return wall, sum(r[2] for r in results), sum(r[3] for r in results), [r[1] for r in results]


def compare(audio: list, ref: list) -> tuple[float, float]:
    """(total length ratio against the reference, worst max abs difference over sentences of equal length)."""
    ratio = sum(len(a) for a in audio) / sum(len(r) for r in ref)
    diffs = [float(np.max(np.abs(a - r))) for a, r in zip(audio, ref) if len(a) == len(r)]
    return ratio, max(diffs) if len(diffs) == len(ref) else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", type=Path, default=ROOT / "recipes/es/medical.txt")
    p.add_argument("--sentences", type=int, default=12, help="every 20th line of --text, this many")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--model", action="append", default=[], metavar="LABEL=PATH",
                   help="another ONNX file, run as the baseline's 2 processes x 1 thread")
    args = p.parse_args(argv)
    lines = [t for _, t in read_sentences(args.text)]
    _state["texts"] = lines[::20][: args.sentences]
    _state["voices"] = [params for _, params in kokoro.voice_specs(12, 0)]
    int8 = str(kokoro.model_path())
    runs = [(name, int8, *VARIANTS[name]) for name in dict.fromkeys(["base", *args.variants])]
    runs += [(label, path, 2, 1, {}, {}) for label, path in (m.split("=", 1) for m in args.model)]
    runs.append(("base again", int8, *VARIANTS["base"]))  # drift of the machine's load over the run
    rows = []
    for name, model, procs, threads, options, config in runs:
        wall, inside, cpu, audio = measure(model, procs, threads, options, config)
        rows.append((name, procs, threads, wall, inside, cpu, audio))
        print(f"  done {name}: {wall:.1f} s", flush=True)
    base_wall, base_cpu, ref = rows[0][3], rows[0][5], rows[0][6]
    n, audio_s = len(_state["texts"]), sum(len(a) for a in ref) / kokoro.SAMPLE_RATE
    print(f"{n} sentences, {audio_s:.1f} s of baseline audio; baseline = speechtl now (2 processes x 1 thread)")
    print("s/sent: wall seconds per sentence (all processes together); cpu/sent: CPU seconds per sentence, "
          "espeak-ng included; in run: share of the processes' wall time inside session.run")
    print(f"{'variant':<12} {'procs':>5} {'thr':>3} {'s/sent':>7} {'RTF':>6} {'speed-up':>8} {'cpu/sent':>8} "
          f"{'cpu ratio':>9} {'in run':>6} {'len ratio':>9} {'max|diff|':>9}")
    for name, procs, threads, wall, inside, cpu, audio in rows:
        ratio, diff = compare(audio, ref)
        total_audio = sum(len(a) for a in audio) / kokoro.SAMPLE_RATE
        print(f"{name:<12} {procs:>5} {threads:>3} {wall / n:7.2f} {wall / total_audio:6.3f} {base_wall / wall:7.2f}x "
              f"{cpu / n:8.2f} {base_cpu / cpu:8.2f}x {inside / (wall * procs):6.0%} {ratio:9.4f} {diff:9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
