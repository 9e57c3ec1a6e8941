"""The feature pass: the rows a :class:`~landmark_tl.data.features.store.FeatureStore` lacks,
computed by any :class:`Encoder` and keyed by it (:func:`encoder_key`).

The pass (:func:`fill_store`) streams images through DataLoader workers a batch at a time:
each worker reads an image's bytes, hashes them and decodes them, so an entry is keyed by
the bytes it was computed from even if the file changes meanwhile. This is the one full
decode of a cold run (the catalog only reads headers): an image that fails it is reported,
and the run goes on without it. Rows are committed a shard at a time as they come, so
memory stays bounded and a killed pass continues where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from landmark_tl.core.errors import UserError
from landmark_tl.core.io import bytes_digest
from landmark_tl.data.features.store import FeatureStore
from landmark_tl.data.transforms import Preprocessing, View


class Encoder(Protocol):
    """What the feature pass needs of a model (``models.backbone.Backbone`` is one): a
    module mapping an image batch at ``preprocessing``'s geometry to ``num_features`` wide
    features, named by ``name`` and ``weights_digest`` in the store's key."""

    name: str
    preprocessing: Preprocessing
    num_features: int
    training: bool

    @property
    def weights_digest(self) -> str: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> Encoder: ...

    def train(self, mode: bool = True) -> Encoder: ...

    def to(self, device: torch.device | str) -> Encoder: ...


log = logging.getLogger(__name__)

_DECODING = "jpeg-draft"  # ImageDecoder's way of decoding: features made otherwise differ


def encoder_key(backbone: Encoder, autocast: torch.dtype | None = None) -> str:
    """Digest of what makes a backbone's features: name, weights, preprocessing, how images
    are decoded (JPEGs reduced to the resize size) and the precision of the pass."""
    parts = (
        backbone.name,
        backbone.weights_digest,
        repr(backbone.preprocessing),
        _DECODING,
        str(autocast),
    )
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


class FeaturePassError(UserError, RuntimeError):
    """The feature pass's loader workers died or sent nothing within ``data.timeout_s``."""


def loader_failure(error: RuntimeError, timeout: float) -> FeaturePassError:
    """A DataLoader's worker crash or timeout (torch's RuntimeError) as a message that says
    the reason and the fix."""
    return FeaturePassError(
        f"the feature pass stopped: {' '.join(str(error).split())}. Its loader workers "
        f"died or sent no batch within data.timeout_s={timeout:g} s: a worker killed for "
        "memory, shared memory (/dev/shm) exhausted (in a container: --shm-size), or a read "
        "that hangs. Lower data.num_workers (0 decodes in this process) or "
        "features.batch_size, or free memory, and run again (computed features are kept)"
    )


@dataclass
class PassResult:
    """What a feature pass did: rows computed, and the images it could not use (index →
    reason: unreadable now, or changed since the catalog read them). Of the images whose
    bytes are the ones the catalog read (same digest), ``decoded`` lists those that decoded
    and ``broken`` those that fail to (index → the decoder's error): they stay unusable
    until the file changes."""

    computed: int = 0
    images: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    broken: dict[int, str] = field(default_factory=dict)
    decoded: array = field(default_factory=lambda: array("q"))  # 8 bytes an image


class _PassImages(Dataset):
    """Item k: image ``todo[k]`` read, hashed (the digest of exactly these bytes), decoded,
    and its ``views`` made; runs in loader workers."""

    def __init__(
        self,
        todo: Sequence[int],
        read: Callable[[int], bytes],
        decode: Callable[[bytes, int], torch.Tensor],
        views: Sequence[View],
    ) -> None:
        self.todo, self.read, self.decode, self.views = todo, read, decode, views

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int) -> tuple[int, str | None, torch.Tensor | str]:
        """(image index, digest of the bytes read (None: unreadable), its views or why it
        failed)."""
        i, digest = self.todo[k], None
        try:
            data = self.read(i)
            digest = bytes_digest(data)
            image = self.decode(data, i)
        except Exception as error:  # reported for this image; the pass goes on
            return i, digest, f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        return i, digest, torch.stack([view(image) for view in self.views])


def _collate(
    batch: list[tuple[int, str | None, torch.Tensor | str]],
) -> tuple[list[tuple[int, str]], torch.Tensor | None, list[tuple[int, str | None, str]]]:
    """(image index, digest) of the decoded images, their views as one tensor (one transfer
    from the worker), and (index, digest read, why) of each other image."""
    ready = [(i, digest) for i, digest, x in batch if not isinstance(x, str)]
    views = [x for _, _, x in batch if not isinstance(x, str)]
    failed = [(i, digest, x) for i, digest, x in batch if isinstance(x, str)]
    return ready, torch.cat(views) if views else None, failed


def pass_batch_size(device: torch.device | str, input_size: Sequence[int]) -> int:
    """Images per forward of the feature pass when ``features.batch_size`` is not set: 64
    on an accelerator. On a CPU as many as keep the activations in the caches, about 8
    images of 224 x 224 px (measured 1.2-2.3x the images/s of 64 across timm models at
    224 px on 2 cores), more of smaller ones (the same pixels), at most 64."""
    if torch.device(device).type != "cpu":
        return 64
    pixels = input_size[-1] * input_size[-2]
    return max(1, min(64, round(8 * 224 * 224 / pixels)))


def _default_batch(device: torch.device | str, backbone: Encoder) -> int:
    return pass_batch_size(device, backbone.preprocessing.input_size)


def fill_store(
    store: FeatureStore,
    backbone: Encoder,
    digests: Sequence[str],
    wanted: Mapping[str, Sequence[int]],
    views: Mapping[str, View],
    read: Callable[[int], bytes],
    decode: Callable[[bytes, int], torch.Tensor],
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    timeout: float = 0,
) -> PassResult:
    """Compute the rows the store lacks: for each view name, the images ``wanted[view]``
    (indices into ``digests``). ``read(i)`` gives image i's bytes and ``decode(data, i)``
    its uint8 (3, H, W) tensor (in ``num_workers`` loader workers). One process computes
    while others wait for the lock and then find the rows there. A worker that dies, or
    workers that send no batch within ``timeout`` seconds (0: no limit), stop the pass with
    :class:`FeaturePassError` (the rows computed before are kept).

    Under data-parallel training (``torch.distributed`` initialised, world > 1) the ranks
    split the pass: rank 0 holds the lock for them all, each rank encodes every
    world-th missing image and commits its own shards; when all are done every rank sees
    every row, and the result (every rank's failures) is the same on each."""
    result = PassResult()
    rank, world = _rank_and_world()
    if world == 1 and not _missing(store, digests, wanted):
        return result
    with store.lock() if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            store.remove_orphans()
        _barrier(world)  # the store is settled: every rank finds the same rows missing
        groups = _missing(store, digests, wanted)
        start = time.perf_counter()
        for names, todo in groups.items():
            _run_pass(
                store,
                backbone,
                digests,
                names,
                _PassImages(todo[rank::world], read, decode, [views[n] for n in names]),
                result,
                batch_size=max(1, (batch_size or _default_batch(device, backbone)) // len(names)),
                num_workers=num_workers,
                device=device,
                autocast=autocast,
                timeout=timeout,
            )
        log.info(
            "computed %d features (%d images) in %.1f s%s",
            result.computed,
            result.images,
            time.perf_counter() - start,
            f" (rank {rank} of {world})" if world > 1 else "",
        )
        _barrier(world)  # every rank's rows are committed
    return _gathered(result, world)


def _rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this data-parallel process; (0, 1) when there is none."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _gathered(result: PassResult, world: int) -> PassResult:
    """Every rank's failures and counts merged into ``result`` (its ``decoded`` stays this
    rank's own: each rank records what it decoded), so every rank leaves out the same
    images."""
    if world == 1:
        return result
    parts: list = [None] * world
    own = (result.computed, result.images, result.failed, result.broken)
    torch.distributed.all_gather_object(parts, own)
    result.computed = sum(p[0] for p in parts)
    result.images = sum(p[1] for p in parts)
    for _, _, failed, broken in parts:
        result.failed.update(failed)
        result.broken.update(broken)
    return result


def _missing(
    store: FeatureStore, digests: Sequence[str], wanted: Mapping[str, Sequence[int]]
) -> dict[tuple[str, ...], list[int]]:
    """The images that lack rows, grouped by the view names they lack (names → ascending
    image indices); one flag per image and view, not an object per image."""
    names = list(wanted)
    lacks = np.zeros((len(digests), len(names)), dtype=bool)
    for v, (view, indices) in enumerate(wanted.items()):
        indices = np.asarray(indices, dtype=np.int64)
        shard_ids, _ = store.locate(view, [digests[i] for i in indices])
        lacks[indices[shard_ids < 0], v] = True
    images = np.flatnonzero(lacks.any(axis=1))
    patterns, group = np.unique(lacks[images], axis=0, return_inverse=True)
    return {
        tuple(n for n, lack in zip(names, pattern, strict=True) if lack): images[
            group.reshape(-1) == g
        ].tolist()
        for g, pattern in enumerate(patterns)
    }


@torch.inference_mode()
def _run_pass(
    store: FeatureStore,
    backbone: Encoder,
    digests: Sequence[str],
    names: Sequence[str],
    images: _PassImages,
    result: PassResult,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device | str,
    autocast: torch.dtype | None,
    timeout: float,
) -> None:
    was_training = backbone.training
    backbone.eval().to(device)
    loader = DataLoader(
        images,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        timeout=timeout if num_workers else 0,  # torch takes a timeout only with workers
    )
    writers = {name: store.writer(name) for name in names}
    device_type = torch.device(device).type
    batches = tqdm(
        loader, desc="features", unit="batch", disable=not sys.stderr.isatty(), leave=False
    )
    threads = _PassThreads(num_workers if device_type == "cpu" else 0)
    with (
        threads,
        torch.autocast(device_type, dtype=autocast or torch.float32, enabled=bool(autocast)),
    ):
        for ready, x, failed in _worker_failures(threads.timed(batches), timeout):
            for i, digest, why in failed:
                result.failed[i] = f"unreadable now ({why})"
                if digest == digests[i]:  # the bytes the catalog read: broken for good
                    result.broken[i] = why
            if not ready:
                continue
            x = x.to(device, non_blocking=True)
            features = backbone(x).float().cpu().numpy().reshape(len(ready), len(names), -1)
            for (i, digest), rows in zip(ready, features, strict=True):
                for name, row in zip(names, rows, strict=True):
                    writers[name].add(digest, row)  # keyed by the bytes that were encoded
                if digest != digests[i]:
                    result.failed[i] = "changed since the catalog read it"
                else:
                    result.decoded.append(i)
            result.computed += len(ready) * len(names)
            result.images += len(ready)
    for writer in writers.values():
        writer.flush()
    backbone.train(was_training)


def _worker_failures(batches: Iterator[Any], timeout: float) -> Iterator[Any]:
    """``batches``, with a loader worker's death or a timeout raised as
    :class:`FeaturePassError` (torch raises a RuntimeError naming the pid and signal)."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as error:
            if "DataLoader" not in str(error):
                raise
            raise loader_failure(error, timeout) from error
        yield batch


class _PassThreads:
    """The CPU forward pass's torch threads beside ``workers`` decoding loader workers.

    It starts on the cores the workers leave (at least one): beside busy workers a forward
    on every core runs slower, its threads waiting on each other (a small model on large
    JPEGs: 243 against 165 images/s on 2 cores). After ``probe`` batches, when the forward
    rarely waits for the workers (they keep up, so they are mostly idle), it takes every
    core: a real backbone at 224 px is forward-bound (33 against 21 images/s). Own code:
    neither torch's DataLoader nor timm adapts threads to the loader.
    """

    def __init__(
        self,
        workers: int,
        probe: int = 8,
        idle: float = 0.1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.workers, self.probe, self.idle, self.clock = workers, probe, idle, clock
        self.before = torch.get_num_threads()
        self.waited = self.busy = 0.0

    def __enter__(self) -> _PassThreads:
        if self.workers:
            torch.set_num_threads(max(1, self.before - self.workers))
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)

    def timed(self, batches: Iterable[Any]) -> Iterator[Any]:
        """``batches``, timing the wait for each against the work on it."""
        iterator, count = iter(batches), 0
        while True:
            start = self.clock()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            got = self.clock()
            yield batch
            count += 1
            if count == 1:  # the first wait is the workers' start
                continue
            self.waited += got - start
            self.busy += self.clock() - got
            if count == 1 + self.probe and self.workers and self.waited < self.idle * self.busy:
                torch.set_num_threads(self.before)


@torch.inference_mode()
def extract_features(
    backbone: Encoder,
    images: Dataset,
    *,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Run ``backbone`` (in eval mode, on ``device``, under ``autocast`` if given) over a
    dataset of image tensors (the bare forward, as benchmarks measure it); ``batch_size``
    as the feature pass's (None: :func:`pass_batch_size`)."""
    was_training = backbone.training
    backbone.eval().to(device)
    batch_size = batch_size or _default_batch(device, backbone)
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers)
    device_type = torch.device(device).type
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=bool(autocast)):
        feats = [backbone(x.to(device, non_blocking=True)).float().cpu() for x in loader]
    backbone.train(was_training)
    return torch.cat(feats) if feats else torch.empty(0, backbone.num_features)
