"""Several processes, one model: PyTorch's own distributed engine (torchrun, DDP, NCCL on GPUs, gloo on CPUs).

World size 1, the default, never creates a process group: every helper here is then a no-op or a direct call,
so the single-process path is what it was. With ``train.nproc_per_node * train.nnodes > 1`` the train stage
re-runs itself under ``torchrun`` (`relaunch`), which starts one process per rank with RANK, LOCAL_RANK,
WORLD_SIZE and MASTER_ADDR/PORT set; each rank then joins the process group (`init_from_env`).

What the ranks agree on, so that a run is the same optimisation problem whatever the world size:
``train.batch_size`` is the global batch, and global batch k holds the same images in the same order for any
world size (`pipeline.samplers.rank_share`); gradients are averaged by DDP; losses that compare embeddings with
each other see the global batch (`wrap_for_global_batch`); evaluation and embedding extraction are sharded by
whole batches and gathered back in the original row order (`pipeline.inference.infer_sharded`), so they match a
single process.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import signal
import subprocess
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline.device import resolve_device
from pipeline.params import TrainParams

log = logging.getLogger(__name__)

# A collective that waits longer than this (a rank died, or rank 0 is stuck writing) fails the run, not hangs it.
TIMEOUT = timedelta(minutes=30)


# --- who am I ---------------------------------------------------------------------------------------------------


def under_torchrun() -> bool:
    """Whether torchrun (or torch.distributed.launch) started this process: it sets LOCAL_RANK for every worker."""
    return "LOCAL_RANK" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, metrics, dvclive logs and shows progress bars."""
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


# --- process group -------------------------------------------------------------------------------------------------


def resolve_backend(choice: str, device: torch.device) -> str:
    """``train.backend``: auto is NCCL for CUDA tensors and gloo for CPU tensors."""
    if choice == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if choice == "nccl":
        if device.type != "cuda":
            raise ValueError(f"train.backend is 'nccl' but training runs on {device}: NCCL needs CUDA; use gloo")
        if not dist.is_nccl_available():
            raise RuntimeError("train.backend is 'nccl' but this torch build has no NCCL; use gloo or auto")
    return choice


def init_from_env(tp: TrainParams) -> None:
    """Join the process group torchrun described in the environment; nothing when WORLD_SIZE is 1 or unset.

    On CUDA, rank ``LOCAL_RANK`` of a node drives GPU ``LOCAL_RANK`` (`torch.cuda.set_device`). Ranks other than
    0 log warnings and errors only, so each progress line appears once.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_initialized():
        return
    device = resolve_device(tp.device)
    kwargs = {}
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} CUDA devices: "
                "lower train.nproc_per_node to the number of GPUs per node"
            )
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    backend = resolve_backend(tp.backend, device)
    dist.init_process_group(backend, timeout=TIMEOUT, **(kwargs if backend == "nccl" else {}))
    atexit.register(shutdown)
    if rank() != 0:
        logging.getLogger("pipeline").setLevel(logging.WARNING)
    configured = tp.nproc_per_node * tp.nnodes
    log.info(
        "process group up: %d ranks on %s (%s)%s",
        world,
        backend,
        device.type,
        "" if world == configured else f"; params say {configured}, torchrun's world size wins",
    )


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """The rank's own GPU (set by `init_from_env`) for a bare ``cuda`` device; any other device unchanged."""
    if device.type == "cuda" and device.index is None and is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _comm_device() -> torch.device:
    """Where collective buffers must live: NCCL moves CUDA tensors only, gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- launching -----------------------------------------------------------------------------------------------------


def torchrun_command(tp: TrainParams, module: str, argv: list[str]) -> list[str]:
    """`python -m torch.distributed.run` (torchrun, from this interpreter's environment) running `module`.

    A single node uses ``--standalone``: a rendezvous on a free local port, so two runs on one machine never
    collide on ``train.rdzv_endpoint``. Several nodes use the rendezvous params; ``train.node_rank`` matters only
    for the static backend (c10d numbers the nodes itself).
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={tp.nnodes}",
        f"--nproc-per-node={tp.nproc_per_node}",
        "--max-restarts=0",  # a failed rank fails the stage; DVC reruns resume from the checkpoint
    ]
    if tp.nnodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [f"--rdzv-backend={tp.rdzv_backend}", f"--rdzv-endpoint={tp.rdzv_endpoint}", f"--rdzv-id={tp.rdzv_id}"]
        if tp.rdzv_backend == "static":
            cmd.append(f"--node-rank={tp.node_rank}")
    return [*cmd, "-m", module, *argv]


def relaunch(tp: TrainParams, module: str, argv: list[str]) -> bool:
    """Re-run this stage under torchrun when the params ask for more than one process and torchrun is not in charge.

    Returns True when the relaunched run finished (the caller then returns), False when this process should do
    the work itself: world size 1, or already a torchrun worker.

    Raises:
        RuntimeError: torchrun exited with a non-zero status (the failing rank's traceback is printed above).
    """
    if tp.nproc_per_node * tp.nnodes == 1 or under_torchrun():
        return False
    cmd = torchrun_command(tp, module, argv)
    log.info("launching %d x %d processes: %s", tp.nnodes, tp.nproc_per_node, shlex.join(cmd))
    proc = subprocess.Popen(cmd)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))  # dvc stops us: pass on
    try:
        status = proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status != 0:
        raise RuntimeError(f"torchrun exited with status {status}; the failing rank's error is above")
    return True


# --- data and collectives ------------------------------------------------------------------------------------------


def rank_seed(seed: int, epoch: int) -> int:
    """A torch seed (dropout) for this rank and epoch: ranks draw differently, and an epoch boundary is a fresh,
    reproducible start, so a resumed multi-process run draws what an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, epoch, rank(), 0xD15]).generate_state(1)[0])


def all_reduce_sum(*values: float) -> tuple[float, ...]:
    """Sums of scalars over ranks (float64), e.g. a loss total and a sample count."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return tuple(t.tolist())


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: per-rank batches leave them slightly apart,
    and evaluation and checkpoints must describe one model, rank 0's."""
    if world_size() == 1:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def all_gather_rows(local: np.ndarray | None) -> np.ndarray:
    """Every rank's rows, concatenated in rank order (numeric arrays; shards may differ in length or be None).

    With contiguous shards in rank order (`shard_range`), the result is the rows in their original order.
    """
    world = world_size()
    if world == 1:
        if local is None:
            raise ValueError("all_gather_rows: no rows on the only rank")
        return local
    meta: list = [None] * world
    dist.all_gather_object(meta, None if local is None else (len(local), tuple(local.shape[1:]), local.dtype.str))
    known = [m for m in meta if m is not None]
    if not known:
        raise ValueError("all_gather_rows: no rank holds any rows")
    _, tail, dtype = known[0]
    if local is None:
        local = np.empty((0, *tail), dtype=dtype)
    lengths = [m[0] if m is not None else 0 for m in meta]
    device = _comm_device()
    buf = torch.zeros((max(lengths), *tail), dtype=torch.from_numpy(local[:0]).dtype, device=device)
    buf[: len(local)] = torch.from_numpy(np.ascontiguousarray(local)).to(device)
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)  # equal sizes: shorter shards are zero-padded, then trimmed
    return np.concatenate([part[:n].cpu().numpy() for part, n in zip(parts, lengths, strict=True)])


def shard_range(n: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [start, stop) of rank `rank`: whole batches of `batch_size`, contiguous, in rank order.

    Cutting at batch boundaries means every batch a rank runs is a batch one process would have run, so the
    sharded result equals the single-process one.
    """
    batches = -(-n // batch_size)
    return min(n, batches * rank // world * batch_size), min(n, batches * (rank + 1) // world * batch_size)


# --- losses --------------------------------------------------------------------------------------------------------


class _GlobalBatchLoss(nn.Module):
    """pytorch-metric-learning's DistributedLossWrapper, reporting the global-batch loss itself.

    The wrapper returns ``world * loss`` so that DDP's gradient averaging leaves the full gradient; here the value
    is divided back (comparable with a single-process run and safe to log) while the gradient keeps the factor.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

        self.wrapped = DistributedLossWrapper(loss, efficient=False)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        scaled = self.wrapped(*args, **kwargs)
        value = scaled.detach() / world_size()
        return scaled + (value - scaled.detach())


def wrap_for_global_batch(loss_or_miner: nn.Module) -> nn.Module:
    """A pair/triplet loss or miner that sees the embeddings of every rank's batch, not just this rank's.

    World size 1: returned unchanged. Otherwise a pytorch-metric-learning miner gets its DistributedMinerWrapper
    (mined indices refer to the gathered batch: this rank's rows first, then the other ranks'), and a pml loss
    that compares embeddings with each other gets its DistributedLossWrapper, whose value is the global-batch
    loss. Losses left unchanged, because DDP's gradient averaging already makes them global: per-sample losses
    (cross-entropy, centre loss) and pml losses that own weights (ArcFace, CosFace, proxy losses compare each
    embedding with class weights, not with other embeddings; keep such a loss inside the DDP-wrapped module so
    its weights' gradients are averaged too).
    """
    if world_size() == 1:
        return loss_or_miner
    from pytorch_metric_learning.losses import BaseMetricLossFunction, CrossBatchMemory
    from pytorch_metric_learning.miners import BaseMiner
    from pytorch_metric_learning.utils.distributed import DistributedMinerWrapper

    if isinstance(loss_or_miner, BaseMiner):
        return DistributedMinerWrapper(loss_or_miner, efficient=False)
    if isinstance(loss_or_miner, (BaseMetricLossFunction, CrossBatchMemory)):
        if any(p.requires_grad for p in loss_or_miner.parameters()):
            return loss_or_miner
        return _GlobalBatchLoss(loss_or_miner)
    return loss_or_miner
