"""One process of the multi-process training test, started by ``accelerate launch``.

Usage: accelerate_worker.py MODEL_DIR TRAIN_MANIFEST DEV_MANIFEST OUT_DIR REPORT_DIR

Trains a few head-strategy steps with ``speechtl.train.loop.train`` and writes
``REPORT_DIR/rank<N>.json``: the utterance ids this process trained on, per
optimizer step, and the hash of its final weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from speechtl.text.normalize import get_normalizer
from speechtl.train.config import TrainConfig
from speechtl.train.loop import train
from speechtl.train.parts import TrainEvent


def main(model_dir: str, train_manifest: str, dev_manifest: str, out_dir: str, report_dir: str) -> None:
    steps: list[list[str]] = []

    def progress(event: TrainEvent) -> None:
        if event.kind == "step":
            steps.append(list(event.utterance_ids))

    config = TrainConfig(strategy="head", max_steps=4, batch_size=2, learning_rate=3e-3, warmup_steps=1,
                         eval_every_steps=4, eval_at_start=False, eval_max_new_tokens=4, log_every_steps=1,
                         mixed_precision="no", seed=3)
    result = train(model_dir, train_manifest, dev_manifest, out_dir, config, get_normalizer("es"), progress)

    from accelerate import PartialState

    rank = PartialState().process_index
    report = {"rank": rank, "num_processes": result.num_processes, "steps": steps,
              "weights_sha256": result.weights_sha256, "best_dev_wer": result.best_dev_wer}
    Path(report_dir).mkdir(parents=True, exist_ok=True)
    (Path(report_dir) / f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:])
