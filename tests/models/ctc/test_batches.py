import numpy as np
import pytest
import torch

from speechtl.models.ctc.batches import IGNORE_INDEX, CtcCollator
from speechtl.train.batches import LengthBucketSampler


def test_duration_buckets_waste_less_padding_than_random_batches():
    # CTC training batches utterances by duration (milliseconds) with the seeded length-bucket sampler
    rng = np.random.default_rng(0)
    durations_ms = rng.integers(500, 12_000, size=400).tolist()
    sampler = LengthBucketSampler(durations_ms, batch_size=8, bucket_batches=50, seed=0)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(400))

    def padded(bs):
        return sum(max(durations_ms[i] for i in b) * len(b) for b in bs)

    order = rng.permutation(400).tolist()
    random_batches = [order[k:k + 8] for k in range(0, 400, 8)]
    assert padded(batches) < 0.8 * padded(random_batches)


def test_collator_pads_waves_masks_and_labels():
    a, b = np.linspace(-1, 1, 5, dtype=np.float32), np.full(3, 0.5, dtype=np.float32) + np.arange(3)
    out = CtcCollator(pad_to_multiple_of=4)([(a, [3, 4]), (b, [5, 6, 7])])
    assert out["input_values"].shape == (2, 8) and out["attention_mask"].tolist() == [[1] * 5 + [0] * 3,
                                                                                      [1] * 3 + [0] * 5]
    assert out["labels"].tolist() == [[3, 4, IGNORE_INDEX], [5, 6, 7]]
    first = out["input_values"][0, :5]
    assert torch.isclose(first.mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.isclose(first.std(unbiased=False), torch.tensor(1.0), atol=1e-3)
    assert out["input_values"][1, 3:].abs().sum() == 0


@pytest.mark.parametrize(("items", "match"), [([], "empty batch"), ([(np.zeros(0), [1])], "item 0: waveform"),
                                              ([(np.ones(4), [])], "item 0: empty label")])
def test_collator_rejects_bad_items(items, match):
    with pytest.raises(ValueError, match=match):
        CtcCollator()(items)
