"""Features of a frozen backbone, computed once per image and view and kept on disk.

An entry is keyed by everything that changes it: the encoder (backbone name, weights
digest, preprocessing), the view (name and parameters) and the image content digest. It
lives outside any run dir (``paths.cache_dir``), is written atomically, and carries a
checksum: a damaged entry is recomputed, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import struct
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from landmark_tl.data.transforms import View
from landmark_tl.errors import UserError
from landmark_tl.io import atomic_write_bytes, printable
from landmark_tl.models.backbone import Backbone

log = logging.getLogger(__name__)

_MAGIC = b"LTLF1"
_HEADER = struct.Struct("<5sI")  # magic, feature width
_CHECKSUM = struct.Struct("<I")


def encoder_key(backbone: Backbone, autocast: torch.dtype | None = None) -> str:
    """Digest of what makes a backbone's features: name, weights, preprocessing and the
    precision of the pass."""
    parts = (backbone.name, backbone.weights_digest, repr(backbone.preprocessing), str(autocast))
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


def encode_entry(feature: torch.Tensor) -> bytes:
    """Header, float32 payload and its CRC32."""
    payload = feature.detach().to(torch.float32).contiguous().numpy().tobytes()
    header = _HEADER.pack(_MAGIC, feature.numel())
    return header + payload + _CHECKSUM.pack(zlib.crc32(payload))


def decode_entry(data: bytes) -> torch.Tensor | None:
    """The feature in ``data``, or None when the entry is damaged in any way."""
    if len(data) < _HEADER.size + _CHECKSUM.size:
        return None
    magic, width = _HEADER.unpack_from(data)
    payload = data[_HEADER.size : -_CHECKSUM.size]
    if magic != _MAGIC or len(payload) != 4 * width:
        return None
    if _CHECKSUM.unpack_from(data, len(data) - _CHECKSUM.size)[0] != zlib.crc32(payload):
        return None
    return torch.frombuffer(bytearray(payload), dtype=torch.float32)


class CachePermissionError(UserError, PermissionError):
    """The feature cache holds an entry or folder this user may not read or write."""


def _permission_problem(path: Path, error: OSError) -> CachePermissionError:
    return CachePermissionError(
        f"{printable(str(path))}: feature cache entry cannot be read or written "
        f"({error.strerror or error}); fix the permissions of the cache (a shared cache needs "
        "group read and write, e.g. chmod -R g+rwX on it, and umask 002), or set "
        "paths.cache_dir (env LANDMARK_TL_CACHE) to a folder you can write"
    )


class FeatureCache:
    """Entries of one encoder under ``root/<encoder key>/<digest[:2]>/<digest>.<view>.f32``.

    An entry or folder without the needed permission raises :class:`CachePermissionError`.
    """

    def __init__(self, root: str | Path, encoder: str) -> None:
        self.dir = Path(root) / encoder

    def path(self, image_digest: str, view: str) -> Path:
        return self.dir / image_digest[:2] / f"{image_digest}.{view}.f32"

    def load(self, image_digest: str, view: str) -> torch.Tensor | None:
        """The cached feature, or None if absent; a damaged entry is deleted."""
        path = self.path(image_digest, view)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except PermissionError as error:
            raise _permission_problem(path, error) from error
        feature = decode_entry(data)
        if feature is None:
            log.warning("damaged feature cache entry %s: recomputing it", path)
            path.unlink(missing_ok=True)
        return feature

    def lock(self, timeout: float = -1) -> FileLock:
        """An inter-process lock on this encoder's entries (held while computing)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except PermissionError as error:
            raise _permission_problem(self.dir, error) from error
        return FileLock(self.dir / ".lock", timeout=timeout)

    def save(self, image_digest: str, view: str, feature: torch.Tensor) -> None:
        path = self.path(image_digest, view)
        try:  # no fsync: a torn entry fails its checksum and is recomputed
            atomic_write_bytes(path, encode_entry(feature), durable=False)
        except PermissionError as error:
            raise _permission_problem(path, error) from error


class _Items(Dataset):
    """(view of image, index) for a list of (image index, view name) pairs."""

    def __init__(
        self,
        images: Mapping[int, torch.Tensor],
        items: Sequence[tuple[int, str]],
        views: Mapping[str, View],
    ) -> None:
        self.images, self.items, self.views = images, items, views

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        image, view = self.items[i]
        return self.views[view](self.images[image])


@torch.inference_mode()
def extract_features(
    backbone: Backbone,
    images: Dataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Run ``backbone`` (in eval mode, on ``device``, under ``autocast`` if given) over a
    dataset of image tensors."""
    was_training = backbone.training
    backbone.eval().to(device)
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers)
    device_type = torch.device(device).type
    batches = tqdm(
        loader, desc="features", unit="batch", disable=not sys.stderr.isatty(), leave=False
    )
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=bool(autocast)):
        feats = [backbone(x.to(device, non_blocking=True)).float().cpu() for x in batches]
    backbone.train(was_training)
    return torch.cat(feats) if feats else torch.empty(0, backbone.num_features)


def view_features(
    backbone: Backbone,
    digests: Sequence[str],
    views: Mapping[str, View],
    decode: Callable[[Sequence[int]], torch.Tensor],
    *,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Features of every view of every image, (N · V, D) with row ``i · V + v``.

    Entries found in ``cache`` are loaded; only images with a missing view are decoded
    (``decode(indices)`` → uint8 (len, 3, H, W)) and passed through the backbone, and the
    new entries are written back.
    """
    names = list(views)
    wanted = [(i, view) for i in range(len(digests)) for view in names]
    found = _load_found(cache, digests, wanted)
    if len(found) < len(wanted):
        # one process computes, others wait and then read (parallel jobs, data-parallel ranks)
        with cache.lock() if cache is not None else contextlib.nullcontext():
            found.update(_load_found(cache, digests, wanted))
            _compute_missing(
                backbone, digests, views, decode, cache, found, wanted, batch_size, device, autocast
            )
    if not wanted:
        return torch.empty(0, backbone.num_features)
    return torch.stack([found[item] for item in wanted])


def _load_found(
    cache: FeatureCache | None, digests: Sequence[str], wanted: list[tuple[int, str]]
) -> dict[tuple[int, str], torch.Tensor]:
    if cache is None:
        return {}
    return {(i, v): f for i, v in wanted if (f := cache.load(digests[i], v)) is not None}


def _compute_missing(
    backbone: Backbone,
    digests: Sequence[str],
    views: Mapping[str, View],
    decode: Callable[[Sequence[int]], torch.Tensor],
    cache: FeatureCache | None,
    found: dict[tuple[int, str], torch.Tensor],
    wanted: list[tuple[int, str]],
    batch_size: int,
    device: torch.device | str,
    autocast: torch.dtype | None,
) -> None:
    """Decode the images that miss a view, run the backbone, fill ``found`` and the cache."""
    missing = [item for item in wanted if item not in found]
    if missing:
        start = time.perf_counter()
        needed = sorted({i for i, _ in missing})
        images = dict(zip(needed, decode(needed), strict=True))
        computed = extract_features(
            backbone,
            _Items(images, missing, views),
            batch_size=batch_size,
            device=device,
            autocast=autocast,
        )
        for (i, view), feature in zip(missing, computed, strict=True):
            found[(i, view)] = feature
            if cache is not None:
                cache.save(digests[i], view, feature)
        log.info(
            "computed %d features (%d images) in %.1f s; %d from the cache",
            len(missing),
            len(needed),
            time.perf_counter() - start,
            len(wanted) - len(missing),
        )
