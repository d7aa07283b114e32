"""Shard files of an explanation job: durable writes, compact images, checksums and guarded reads.

A shard holds one predict batch of one rank: ``rows`` (a dict of tensors with one row per explained image,
keyed by dataset index), ``unreadable`` (dataset indices whose image file could not be read, skipped and
recorded), the job's ``fingerprint`` and a CRC-32 of every tensor. Images (``image``, ``x_cf``,
``reconstruction`` and compared methods' ``<name>/x_cf``) are stored as uint8 by default: a quarter of
float32, exact to 1/255, and decoded back to float in [0, 1] on read (distances and validity are computed
in the predict step, before compaction, so they are exact).

Writes are durable: temp file, ``fsync``, ``os.replace``, ``fsync`` of the directory, so a shard under its
final name is complete even after a power cut. A shard that cannot be loaded, or whose checksums disagree,
raises :class:`CorruptShard`; the writer moves it aside and recomputes its images.
"""
from __future__ import annotations

import errno
import glob
import io
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

SHARD_GLOB = "shard-*.pt"
FORMAT = 2
# Last path component of the keys stored as images (uint8): originals, counterfactuals, a latent method's
# reconstruction, AC-RE's pre-inpainting image, its chain reconstruction and masks (all in [0, 1]).
IMAGE_KEYS = ("image", "x_cf", "reconstruction", "pre_explanation", "chain_reconstruction", "change_mask",
              "inpaint_mask")
SEQUENCE_KEYS = ("snapshots",)
UNREADABLE = "unreadable"


class CorruptShard(Exception):
    """A shard file that cannot be read back as written (truncated, damaged or of an unknown format)."""


@dataclass(frozen=True)
class ShardInfo:
    """What the resume logic needs of a shard without reading its images."""

    path: str
    index: Tensor          # [N] long, explained rows
    unreadable: Tensor     # [M] long, skipped unreadable images
    fingerprint: str | None
    key: Tensor            # [N] long, the rows' keys (dataset index, target slot): see :func:`row_key`


def shard_name(index: Tensor) -> str:
    """A name fixed by the set of dataset indices in the shard (so a rerun finds the same file)."""
    idx = index.long().sort().values
    crc = zlib.crc32(idx.numpy().tobytes())
    return f"shard-{int(idx[0]):09d}-{int(idx[-1]):09d}-{len(idx)}-{crc:08x}.pt"


SLOT = "target_slot"  # which of an image's targets a row is (policies with several targets per image)
SLOTS = 2**16          # target slots per image a row key can tell apart


def row_key(index: Tensor, slot: Tensor | None = None) -> Tensor:
    """A row's key ``index · 2^16 + slot``: one row per (dataset index, target slot), ordered by both."""
    index = index.long()
    return index * SLOTS if slot is None else index * SLOTS + slot.long()


def is_image_key(key: str, value: Tensor) -> bool:
    """Image columns (stored as uint8 when the writer asks): ``[B, C, H, W]`` images and ``[B, S, C, H, W]``
    image sequences (:class:`~cflight.methods.LatentAttack`'s ``snapshots``)."""
    name = key.rsplit("/", 1)[-1]
    return (name in IMAGE_KEYS and value.ndim == 4) or (name in SEQUENCE_KEYS and value.ndim == 5)


def _crc(t: Tensor) -> int:
    if t.numel() == 0:
        return 0
    flat = torch.empty(t.numel(), dtype=t.dtype).copy_(t.detach().reshape(-1))  # dense, whatever t's strides
    return zlib.crc32(flat.view(torch.uint8).numpy())


def _compact(key: str, value: Tensor, image_dtype: torch.dtype) -> Tensor:
    if image_dtype == torch.uint8 and value.is_floating_point() and is_image_key(key, value):
        return (value.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return value


def _expand(key: str, value: Tensor) -> Tensor:
    if value.dtype == torch.uint8 and is_image_key(key, value):
        return value.float() / 255
    return value


def write_shard(path: str, rows: dict[str, Tensor], fingerprint: str, unreadable: Tensor | None = None,
                image_dtype: torch.dtype = torch.uint8, suffix: str = "") -> int:
    """Write one shard durably; returns its size in bytes.

    ``rows``: CPU tensors with one row per explained image; ``suffix`` makes the temp name unique per rank.
    A full disk raises an :class:`OSError` whose message says which shard and that finished shards are kept.
    """
    rows = {k: _compact(k, v, image_dtype) for k, v in rows.items()}
    unread = torch.zeros(0, dtype=torch.long) if unreadable is None else unreadable.long().cpu()
    payload = {"format": FORMAT, "fingerprint": fingerprint, "rows": rows, UNREADABLE: unread,
               "checksums": {**{k: _crc(v) for k, v in rows.items()}, UNREADABLE: _crc(unread)}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp = f"{path}{suffix}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if err.errno == errno.ENOSPC:
            raise OSError(err.errno, f"disk full while writing {path}: finished shards are kept; free space "
                                     "and rerun the same command to resume") from None
        raise
    _fsync_dir(os.path.dirname(path))
    return buf.getbuffer().nbytes


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _load(path: str) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated zip, bad pickle, empty file: all mean "not readable as written"
        raise CorruptShard(f"{os.path.basename(path)}: {type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "rows" not in payload:
        raise CorruptShard(f"{os.path.basename(path)}: not a cflight shard of format {FORMAT} (written by another "
                           "version of cflight?)")
    return payload


def _verified(payload: dict, path: str, keys: Iterable[str]) -> dict[str, Tensor]:
    """The tensors ``keys`` of ``payload`` (``rows`` plus ``unreadable``), each checked against its CRC-32."""
    sums = payload.get("checksums", {})
    out = {}
    for key in keys:
        value = payload[UNREADABLE] if key == UNREADABLE else payload["rows"][key]
        if sums.get(key) != _crc(value):
            raise CorruptShard(f"{os.path.basename(path)}: checksum of {key!r} does not match (damaged file)")
        out[key] = value
    n = {len(v) for k, v in out.items() if k != UNREADABLE}
    if len(n) > 1:
        raise CorruptShard(f"{os.path.basename(path)}: columns of different lengths {sorted(n)}")
    return out


def read_info(path: str) -> ShardInfo:
    """Index, unreadable indices and fingerprint of a shard (reads no images)."""
    payload = _load(path)
    t = _verified(payload, path, [k for k in ("index", SLOT, UNREADABLE) if k == UNREADABLE or k in payload["rows"]])
    index = t.get("index", torch.zeros(0, dtype=torch.long)).long()
    return ShardInfo(path, index, t[UNREADABLE].long(), payload.get("fingerprint"), row_key(index, t.get(SLOT)))


def verify(path: str) -> None:
    """Check every tensor of a shard against its checksum (reads the whole file)."""
    payload = _load(path)
    _verified(payload, path, [*payload["rows"], UNREADABLE])


def read_rows(path: str, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The explained rows of a shard (``keys``, default all), images decoded to float in [0, 1]."""
    payload = _load(path)
    keys = list(payload["rows"]) if keys is None else [k for k in keys if k in payload["rows"]]
    return {k: _expand(k, v) for k, v in _verified(payload, path, keys).items()}


def row_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Each stored key's shape (reads no tensor data)."""
    return {k: tuple(v.shape) for k, v in _load(path)["rows"].items()}


def shard_paths(shard_dir: str) -> list[str]:
    """Finished shards, sorted by name (partial ``.tmp`` files are ignored)."""
    return sorted(glob.glob(os.path.join(shard_dir, SHARD_GLOB)))


def scan(shard_dir: str) -> Iterator[ShardInfo | CorruptShard]:
    """Every finished shard's :class:`ShardInfo`, or the :class:`CorruptShard` error it raised, in name order."""
    for path in shard_paths(shard_dir):
        try:
            yield read_info(path)
        except CorruptShard as err:
            err.path = path  # type: ignore[attr-defined]
            yield err


def quarantine(path: str) -> str:
    """Move a corrupt shard to ``<shard_dir>/corrupt/`` (kept for inspection, out of the job's way)."""
    dest_dir = os.path.join(os.path.dirname(path), "corrupt")
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, os.path.basename(path))
    k = 1
    while os.path.exists(dest):
        dest = os.path.join(dest_dir, f"{os.path.basename(path)}.{k}")
        k += 1
    os.replace(path, dest)
    return dest
