"""WiSE-FT weight interpolation: exact endpoints, shared tensors untouched, alpha chosen on dev data only."""

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from speechtl.models.random_whisper import save_random_whisper  # noqa: E402
from speechtl.train.interpolate import DevScore, Interpolator, interpolate, select_alpha  # noqa: E402


def _states():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(4, 3, generator=g), "frozen": torch.randn(5, generator=g),
            "half": torch.randn(6, generator=g).to(torch.bfloat16), "steps": torch.tensor([3])}
    adapted = {"w": torch.randn(4, 3, generator=g), "frozen": base["frozen"].clone(),
               "half": torch.randn(6, generator=g).to(torch.bfloat16), "steps": torch.tensor([3])}
    return base, adapted


@pytest.mark.parametrize("alpha,expected", [(0.0, "base"), (1.0, "adapted")])
def test_endpoints_are_exactly_the_two_models(alpha, expected):
    base, adapted = _states()
    mixed = interpolate(base, adapted, alpha)
    want = base if expected == "base" else adapted
    for name in base:
        assert torch.equal(mixed[name], want[name]) and mixed[name].dtype == want[name].dtype, name


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_a_mix_is_the_weighted_sum_and_leaves_shared_tensors_bit_identical(alpha):
    base, adapted = _states()
    mixed = interpolate(base, adapted, alpha)
    assert torch.allclose(mixed["w"], (1 - alpha) * base["w"] + alpha * adapted["w"], atol=1e-6)
    assert not torch.equal(mixed["w"], base["w"]) and not torch.equal(mixed["w"], adapted["w"])
    assert torch.equal(mixed["frozen"], base["frozen"])  # (1-a)x + ax may round away from x: it must not
    assert mixed["half"].dtype == torch.bfloat16


@pytest.mark.parametrize("change,message", [
    (lambda b, a: a.pop("w"), "differ in parameters"),
    (lambda b, a: a.__setitem__("w", torch.zeros(3, 4)), "has shape"),
])
def test_models_that_do_not_match_are_refused(change, message):
    base, adapted = _states()
    change(base, adapted)
    with pytest.raises(ValueError, match=message):
        interpolate(base, adapted, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        interpolate(*_states(), 1.5)


def test_select_alpha_decodes_only_the_dev_sets_it_is_given_and_keeps_the_lowest_joined_wer():
    # (errors, reference words) per alpha: the large set's 1000 words outweigh the small set's 50
    counts = {"domain/dev": {0.0: (300, 1000), 0.5: (120, 1000), 1.0: (100, 1000)},
              "general/dev": {0.0: (5, 50), 0.5: (8, 50), 1.0: (20, 50)}}
    calls = []

    def dev_score(alpha, ref, manifest):
        calls.append((alpha, ref, manifest))
        errors, words = counts[ref][alpha]
        return DevScore(errors / words, errors, words)

    dev = {"domain/dev": Path("domain/dev.jsonl"), "general/dev": Path("general/dev.jsonl")}
    choice = select_alpha([1.0, 0.0, 0.5], dev, dev_score)
    # joined: 305/1050, 128/1050, 120/1050 -> alpha 1 (the unweighted mean of the two rates would keep 0.5:
    # 0.2, 0.14, 0.25)
    assert choice["alpha"] == 1.0
    assert [round(c["pooled_dev_wer"], 6) for c in choice["candidates"]] == [round(e / 1050, 6) for e in (305, 128, 120)]
    assert choice["candidates"][2]["dev_wer"] == {"domain/dev": 0.1, "general/dev": 0.4}
    assert choice["candidates"][2]["dev_errors"] == {"domain/dev": 100, "general/dev": 20}
    assert {ref for _, ref, _ in calls} == set(dev) and {m for _, _, m in calls} == set(dev.values())
    assert [c["alpha"] for c in choice["candidates"]] == [0.0, 0.5, 1.0]
    assert choice["dev_sets"] == ["domain/dev", "general/dev"]


def test_a_no_speech_dev_set_adds_its_words_as_insertions():
    def dev_score(alpha, ref, manifest):
        if ref == "nonspeech/dev":  # alpha 1 writes 30 words on clips without speech
            return DevScore({0.0: 0.0, 1.0: 0.5}[alpha], {0.0: 0, 1.0: 30}[alpha], 0)
        return DevScore(*{0.0: (0.2, 20, 100), 1.0: (0.1, 10, 100)}[alpha])

    choice = select_alpha([0.0, 1.0], {"d/dev": Path("d"), "nonspeech/dev": Path("n")}, dev_score)
    assert [c["pooled_dev_wer"] for c in choice["candidates"]] == [0.2, 0.4] and choice["alpha"] == 0.0


def test_select_alpha_breaks_a_tie_toward_the_base_model_and_needs_a_dev_set_with_words():
    assert select_alpha([0.0, 0.5, 1.0], {"d/dev": Path("x")}, lambda a, r, m: DevScore(0.1, 1, 10))["alpha"] == 0.0
    with pytest.raises(ValueError, match="no dev set"):
        select_alpha([0.5], {}, lambda a, r, m: DevScore(0.0, 0, 1))
    with pytest.raises(ValueError, match="no reference words"):
        select_alpha([0.5], {"nonspeech/dev": Path("n")}, lambda a, r, m: DevScore(0.0, 0, 0))


def test_interpolator_sets_weights_and_saves_a_loadable_model(tmp_path):
    from speechtl.models.whisper import WhisperASR

    base_dir = save_random_whisper(tmp_path / "base", seed=1)
    trained = WhisperASR.load(base_dir)
    with torch.no_grad():  # "training" moved the decoder only
        for p in trained.model.model.decoder.parameters():
            p.add_(0.01)
    trained.save(tmp_path / "trained")
    interp = Interpolator(base_dir, tmp_path / "trained")
    base_sd = WhisperASR.load(base_dir).model.state_dict()
    for name, value in interp.at(0.0).model.state_dict().items():
        assert torch.equal(value, base_sd[name]), name
    out = interp.save(0.5, tmp_path / "mixed")
    mixed = WhisperASR.load(out).model.state_dict()
    trained_sd = WhisperASR.load(tmp_path / "trained").model.state_dict()
    enc = "model.encoder.layers.0.fc1.weight"
    dec = "model.decoder.layers.0.fc1.weight"
    assert torch.equal(mixed[enc], base_sd[enc])  # shared weights untouched: encoder caches stay valid
    assert torch.allclose(mixed[dec], (base_sd[dec] + trained_sd[dec]) / 2, atol=1e-6)
    assert not (tmp_path / ".mixed.tmp").exists() and not (tmp_path / ".mixed.old").exists()


@pytest.mark.parametrize("curve, decoded, kept", [
    ({0.0: 0.35, 0.25: 0.29, 0.5: 0.27, 0.75: 0.24, 1.0: 0.22}, [0.75, 1.0], 1.0),  # falls to alpha 1
    ({0.0: 0.21, 0.25: 0.16, 0.5: 0.126, 0.75: 0.12, 1.0: 0.133}, [0.5, 0.75, 1.0], 0.75),  # one valley
    ({0.0: 0.10, 0.25: 0.2, 0.5: 0.3, 0.75: 0.4, 1.0: 0.5}, [0.0, 0.25, 0.5, 0.75, 1.0], 0.0),  # the base wins
])
def test_descend_decodes_down_from_the_largest_alpha_while_the_joined_wer_falls(curve, decoded, kept):
    calls = []

    def dev_wer(alpha, ref, manifest):
        calls.append(alpha)
        return DevScore(curve[alpha], round(curve[alpha] * 1000), 1000)

    choice = select_alpha(list(curve), {"d/dev": Path("x")}, dev_wer, search="descend")
    assert sorted(set(calls)) == decoded and len(calls) == len(decoded)  # each alpha decoded once at most
    assert [c["alpha"] for c in choice["candidates"]] == decoded and choice["alpha"] == kept
    assert choice["skipped"] == [a for a in curve if a not in decoded] and choice["search"] == "descend"
    grid = select_alpha(list(curve), {"d/dev": Path("x")}, lambda a, r, m: DevScore(curve[a], round(curve[a] * 1000), 1000))
    assert grid["alpha"] == kept and grid["skipped"] == []  # the grid agrees where the curve has one valley
    with pytest.raises(ValueError, match="search 'golden'"):
        select_alpha(list(curve), {"d/dev": Path("x")}, dev_wer, search="golden")
