"""`speechtl adapt` on the CTC route: a tiny wav2vec2 (route from the architecture) and a CTC head on a tiny
Whisper's encoder; baseline, greedy and LM systems, the held-out-free LM text, the report sections."""

import json

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("flashlight.lib.text.decoder")

from tone_corpus import folder_corpus  # noqa: E402

from speechtl.cli import main  # noqa: E402
from speechtl.data.manifest import read_manifest, sentence_key  # noqa: E402
from speechtl.models.random_whisper import save_random_whisper  # noqa: E402

SENTENCES = ["hola qué tal", "buenos días", "muchas gracias", "hasta luego", "por favor", "buenas noches",
             "sí señor", "de nada", "perdone usted", "hasta mañana", "con permiso", "claro que sí"]


def _wav2vec2(out):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, vocab_size=12, mask_time_prob=0.0)
    Wav2Vec2ForCTC(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt_ctc")
    corpus = root / "corpus"
    folder_corpus(corpus, SENTENCES)
    lm_text = root / "lm.txt"  # every sentence, test ones included: the run must remove the held-out ones
    lm_text.write_text("\n".join(SENTENCES + ["gracias por todo"]) + "\n", encoding="utf-8")
    terms = root / "terms.txt"
    terms.write_text("gracias\n", encoding="utf-8")
    recipe = {
        "name": "tiny-ctc", "lang": "es", "model": str(_wav2vec2(root / "w2v2")),
        "data": {"sources": [{"name": "corpus", "kind": "corpus", "format": "folder", "path": str(corpus),
                              "split": {"dev_share": 0.2, "test_share": 0.2, "by_speaker": False, "seed": 1}}]},
        "train": {"strategy": "top-k", "top_k": 1, "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3,
                  "warmup_steps": 1, "eval_every_steps": 2, "mixed_precision": "no"},
        "eval": {"primary": "corpus/test", "terms": str(terms), "batch_size": 4, "max_wer": None},  # random weights
        "decode": {"lm_sentences": [str(lm_text)], "lm_weights": [0.5, 1.0], "word_scores": [0.0]},
        "export": {"formats": ["hf", "ct2", "onnx"]},
    }
    path = root / "tiny-ctc.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return {"root": root, "recipe": path, "whisper": save_random_whisper(root / "whisper", seed=1)}


def test_wav2vec2_checkpoint_takes_the_ctc_route(setup, capsys):
    runs = setup["root"] / "runs"
    assert main(["adapt", str(setup["recipe"]), "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "route ctc" in out and "baseline: none" in out and "export ct2: skipped" in out
    run = runs / "tiny-ctc"
    report = json.loads((run / "report.json").read_text())
    assert set(report["evaluations"]) == {"adapted", "adapted+lm"}  # a random head is no baseline
    assert report["train"]["route"] == "ctc" and report["train"]["strategy"] == "top-k"
    for name in ("export/hf/vocab.json", "export/hf/speechtl_ctc.json", "lm/lm.arpa", "lm/tuning.json",
                 "eval/adapted+lm/corpus-test/metrics.json", "export/onnx/model.onnx", "export/onnx/README.md"):
        assert (run / name).exists(), name
    for fmt in ("hf", "onnx"):  # greedy decoding of the same weights on another runtime: the same transcripts
        parity = report["exports"][fmt]["parity"]
        assert parity["passed"] and abs(parity["diff_points"]) < 1e-9 and parity["num_utts"] > 0
    tuning = json.loads((run / "lm" / "tuning.json").read_text())
    held_out = {sentence_key(u.text) for split in ("dev", "test")
                for u in read_manifest(run / "data" / "corpus" / f"{split}.jsonl")}
    assert tuning["lm_text"]["held_out_removed"] >= len(held_out) > 0
    assert len(tuning["tuning"]) == 3 and tuning["chosen"]["lm_weight"] in (0.5, 1.0)
    arpa_words = {line.split("\t")[1] for line in (run / "lm" / "lm.arpa").read_text().splitlines()
                  if line.count("\t") >= 1 and len(line.split("\t")[1].split()) == 1}
    train_words = {w for u in read_manifest(run / "data/train.jsonl") for w in sentence_key(u.text).split()}
    held_out_only = {w for k in held_out for w in k.split()} - train_words - {"gracias", "por", "todo"}
    assert not held_out_only & arpa_words  # words only the held-out sentences have never reach the LM
    assert "| corpus/test (primary; real speech, seen speaker" in (run / "report.md").read_text()

    # the exported model transcribes through the CLI
    wav = next((setup["root"] / "corpus" / "spk0").glob("*.wav"))
    assert main(["transcribe", "--model", str(run / "export" / "hf"), "--lang", "es", str(wav)]) == 0
    assert str(wav) in capsys.readouterr().out


def test_whisper_encoder_ctc_head_scores_against_whisper(setup, capsys):
    runs = setup["root"] / "runs"
    assert main(["adapt", str(setup["recipe"]), f"model={setup['whisper']}", "train.route=ctc",
                 "train.strategy=head", "name=tiny-wctc", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "route ctc" in out and "encoder cache" in out
    report = json.loads((runs / "tiny-wctc" / "report.json").read_text())
    assert set(report["evaluations"]) == {"baseline", "adapted", "adapted+lm"}
    assert report["train"]["cache_stage"] == 4  # the whole encoder of the 2-layer model is read from the cache
    md = (runs / "tiny-wctc" / "report.md").read_text()
    assert "adapted+lm" in md and "baseline" in md
