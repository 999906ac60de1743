"""The training batch samplers. Both yield (epoch, index) keys, so loader workers know the epoch for augmentation,
and both are functions of (seed, epoch): a resumed run sees the same batches. With several processes, each rank
takes its share of every global batch (`rank_share`), so the global batches are those of a single process."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
from pytorch_metric_learning import samplers as pml_samplers
from pytorch_metric_learning.utils import common_functions as pml_common
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


def rank_share(order: np.ndarray, batch_size: int, rank: int, world: int) -> np.ndarray:
    """This rank's part of every global batch of `order`, in order: the k-th local batch is the rank-th contiguous
    slice of global batch k.

    Global batch k is thus the same images whatever the world size, and a group of consecutive positions (an
    m-per-class sampler's m images) stays on one rank when ``batch_size / world`` is a multiple of m.
    `order` must hold whole global batches.
    """
    if world == 1:
        return order
    if batch_size % world or len(order) % batch_size:
        raise ValueError(f"{len(order)} indices in global batches of {batch_size} cannot be shared by {world} ranks")
    return order.reshape(-1, world, batch_size // world)[:, rank].reshape(-1)


class EpochSampler(Sampler):
    """Shuffles by (seed, epoch) and yields (epoch, index) keys, so workers know the epoch for augmentation.

    With `world` processes, rank `rank` yields its share of every global batch of `batch_size`
    (`rank_share`), so the global batches are those of a single process.
    """

    def __init__(self, n: int, seed: int, batch_size: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch = n, seed, 0
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.length = (n // batch_size) * batch_size  # drop the ragged last batch: BatchNorm needs > 1 sample

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)[: self.length]
        order = rank_share(order, self.batch_size, self.rank, self.world)
        return iter((self.epoch, int(i)) for i in order)

    def __len__(self) -> int:
        return self.length // self.world


class MPerClassEpochSampler(Sampler):
    """pml's MPerClassSampler (m images per identity per batch), made a function of (seed, epoch).

    Yields (epoch, index) keys like `EpochSampler`. pml draws from the module-level
    `common_functions.NUMPY_RANDOM` and shuffles its label list in place, so each epoch builds a fresh pml sampler
    and draws its whole index list under a generator seeded with (seed, epoch): a resumed run sees the same batches.
    """

    def __init__(self, labels: np.ndarray, m: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        labels = np.asarray(labels)
        classes = len(np.unique(labels))
        if batch_size % m:
            raise ValueError(f"loss.m_per_class={m} must divide train.batch_size={batch_size}")
        if m * classes < batch_size:  # too few identities for batch_size / m of them per batch: more images each
            wider = next(d for d in range(m, batch_size + 1) if batch_size % d == 0 and d * classes >= batch_size)
            log.warning(
                "loss.m_per_class=%d x %d identities is below train.batch_size=%d: taking %d images per identity",
                m,
                classes,
                batch_size,
                wider,
            )
            m = wider
        self.labels, self.m, self.batch_size, self.seed, self.epoch = labels, m, batch_size, seed, 0
        self.rank, self.world = rank, world
        self.length = max(batch_size, (len(labels) // batch_size) * batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        sampler = pml_samplers.MPerClassSampler(self.labels, self.m, self.batch_size, self.length)
        saved = pml_common.NUMPY_RANDOM
        pml_common.NUMPY_RANDOM = np.random.RandomState([self.seed, self.epoch])
        try:
            order = list(sampler)
        finally:
            pml_common.NUMPY_RANDOM = saved
        if self.world > 1:  # each rank takes its slice of every global batch, as EpochSampler does
            order = rank_share(np.asarray(order), self.batch_size, self.rank, self.world).tolist()
        return iter((self.epoch, int(i)) for i in order)

    def __len__(self) -> int:
        return self.length // self.world
