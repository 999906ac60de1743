"""The batch samplers: functions of (seed, epoch), and each rank's share of every global batch."""

import numpy as np
import pytest

from pipeline.samplers import EpochSampler, MPerClassEpochSampler, rank_share


def test_rank_share_keeps_every_global_batch_whole():
    order = np.random.default_rng(0).permutation(48)
    shares = [rank_share(order, 12, r, 3) for r in range(3)]
    for k in range(4):  # local batch k of every rank together is global batch k, in order
        assert (
            np.concatenate([s[k * 4 : (k + 1) * 4] for s in shares]).tolist() == order[k * 12 : (k + 1) * 12].tolist()
        )
    assert rank_share(order, 12, 0, 1) is order
    with pytest.raises(ValueError, match="cannot be shared"):
        rank_share(order, 10, 0, 3)


def test_epoch_sampler_ranks_together_yield_the_single_process_batches():
    one = list(EpochSampler(50, seed=3, batch_size=8))
    ranks = [EpochSampler(50, seed=3, batch_size=8, rank=r, world=2) for r in range(2)]
    assert [len(s) for s in ranks] == [24, 24]
    parts = [list(s) for s in ranks]
    rebuilt = [key for k in range(6) for part in parts for key in part[k * 4 : (k + 1) * 4]]
    assert rebuilt == one


def test_m_per_class_sampler_batches_m_images_per_identity_reproducibly():
    labels = np.repeat(np.arange(10), 7)
    sampler = MPerClassEpochSampler(labels, m=4, batch_size=8, seed=1)
    first = list(sampler)
    assert len(first) == len(sampler) == 64
    assert {e for e, _ in first} == {0}
    for start in range(0, len(first), 8):
        counts = np.unique(labels[[i for _, i in first[start : start + 8]]], return_counts=True)[1]
        assert counts.tolist() == [4, 4]
    assert list(sampler) == first  # a function of (seed, epoch): a resumed run sees the same batches
    sampler.set_epoch(1)
    assert [i for _, i in sampler] != [i for _, i in first]


def test_m_per_class_sampler_refuses_an_m_that_does_not_divide_the_batch():
    with pytest.raises(ValueError, match="must divide train.batch_size=8"):
        MPerClassEpochSampler(np.repeat(np.arange(10), 7), m=3, batch_size=8, seed=0)


def test_too_few_identities_for_the_batch_take_more_images_each(caplog):
    labels = np.repeat(np.arange(10), 7)  # 10 identities: 2 per identity cannot fill 32 (16 identities)
    sampler = MPerClassEpochSampler(labels, m=2, batch_size=32, seed=0)
    assert "taking 4 images per identity" in caplog.text
    batch = [i for _, i in sampler][:32]
    assert np.unique(labels[batch], return_counts=True)[1].tolist() == [4] * 8
