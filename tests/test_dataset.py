import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline import augment
from pipeline.dataset import FaceDataset
from pipeline.params import AugmentParams


def dataset(**kw) -> FaceDataset:
    images = np.random.default_rng(0).integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    rows = np.arange(5, 37)
    return FaceDataset(images, rows, np.arange(len(rows)) % 3, augment.build(AugmentParams()), seed=7, **kw)


def test_samples_are_uint8_chw_with_labels() -> None:
    ds = dataset()
    x, y = ds[(0, 4)]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.item() == 4 % 3 and y.dtype == torch.long
    plain = FaceDataset(ds.array, ds.rows)
    x, y = plain[4]
    assert torch.equal(x, torch.from_numpy(ds.array[9].transpose(2, 0, 1).copy())) and y.item() == -1


def test_a_batch_is_the_samples_one_by_one() -> None:
    ds = dataset()
    keys = [(2, 3), (2, 0), (1, 3), (2, 31)]
    batch = ds.__getitems__(keys)
    for key, (x, y) in zip(keys, batch, strict=True):
        one_x, one_y = ds[key]
        assert torch.equal(x, one_x) and torch.equal(y, one_y)


def test_draws_depend_on_seed_epoch_and_image_only() -> None:
    ds = dataset()
    first = [ds[(1, i)][0] for i in range(8)]
    again = [ds[(1, i)][0] for i in reversed(range(8))][::-1]  # another order: the same draws
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other_epoch = [ds[(2, i)][0] for i in range(8)]
    assert sum(not torch.equal(a, b) for a, b in zip(first, other_epoch, strict=True)) >= 4


def test_loader_batches_match_with_and_without_a_worker() -> None:
    ds = dataset()
    keys = [(0, i) for i in range(32)]
    batches = [list(DataLoader(ds, batch_size=8, sampler=keys, num_workers=workers)) for workers in (0, 1)]
    for (x0, y0), (x1, y1) in zip(*batches, strict=True):
        assert x0.shape == (8, 3, 16, 16) and torch.equal(x0, x1) and torch.equal(y0, y1)
