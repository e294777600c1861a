"""Replacing one member of a ZIP archive while every other member stays byte-identical.

Python's ``zipfile`` can only recompress what it copies, and a backup's
``uploads/`` tree must come back exactly as TREK wrote it. So the archive is
rewritten at the byte level: every other member's local header, compressed
data and data descriptor are copied verbatim, their central directory records
too (only the offset field changes), and the one replaced member gets a new
local header and data with its original name, timestamp, attributes and
position. Archives this cannot do safely (ZIP64, multi-disk, encrypted
members, unknown compression) are refused with a reason.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_LOCAL_FIXED = 30
_CENTRAL_FIXED = 46
_EOCD_FIXED = 22
_MAX_COMMENT = 0xFFFF
_FLAG_ENCRYPTED = 0x0001
_FLAG_DATA_DESCRIPTOR = 0x0008
_STORED, _DEFLATED = 0, 8
_LIMIT32 = 0xFFFFFFFF
_CHUNK = 1 << 20


class ZipLayoutError(Exception):
    """The archive cannot be rewritten safely. ``reason`` says why, for a report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RawEntry:
    name: str
    central: bytes  # the whole central directory record, verbatim
    local_offset: int
    span_end: int  # where this member's bytes (header, data, descriptor) end in the file

    @property
    def flags(self) -> int:
        return int(struct.unpack_from("<H", self.central, 8)[0])

    @property
    def method(self) -> int:
        return int(struct.unpack_from("<H", self.central, 10)[0])


@dataclass(frozen=True)
class ZipLayout:
    entries: tuple[RawEntry, ...]  # central directory order
    prefix_end: int  # bytes before the first member (normally 0), copied as they are
    eocd: bytes  # end-of-central-directory record including its comment


def read_layout(handle: BinaryIO) -> ZipLayout:
    try:
        return _read_layout(handle)
    except struct.error:
        raise ZipLayoutError("damaged ZIP structure") from None


def _read_layout(handle: BinaryIO) -> ZipLayout:
    size = handle.seek(0, 2)
    tail_len = min(size, _EOCD_FIXED + _MAX_COMMENT)
    handle.seek(size - tail_len)
    tail = handle.read(tail_len)
    at = tail.rfind(_EOCD_SIG)
    while at >= 0 and (at + _EOCD_FIXED > len(tail)
                       or at + _EOCD_FIXED + struct.unpack_from("<H", tail, at + 20)[0] != len(tail)):
        at = tail.rfind(_EOCD_SIG, 0, at)
    if at < 0:
        raise ZipLayoutError("no end-of-central-directory record (truncated or not a ZIP)")
    eocd = tail[at:]
    disk, cd_disk, on_disk, count, cd_size, cd_offset = struct.unpack_from("<HHHHII", eocd, 4)
    if at >= 20 and tail[at - 20 : at - 16] == _ZIP64_LOCATOR_SIG or _LIMIT32 in (cd_size, cd_offset):
        raise ZipLayoutError("ZIP64 archive (over 4 GB or 65535 members); keyrotate leaves those as they are")
    if disk or cd_disk or on_disk != count:
        raise ZipLayoutError("multi-disk archive")
    eocd_offset = size - tail_len + at
    if cd_offset + cd_size != eocd_offset:
        raise ZipLayoutError("central directory is not where the archive says it is")
    handle.seek(cd_offset)
    directory = handle.read(cd_size)
    entries: list[tuple[str, bytes, int]] = []
    pos = 0
    for _ in range(count):
        if directory[pos : pos + 4] != _CENTRAL_SIG:
            raise ZipLayoutError("damaged central directory")
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", directory, pos + 28)
        end = pos + _CENTRAL_FIXED + name_len + extra_len + comment_len
        record = directory[pos:end]
        flags = struct.unpack_from("<H", record, 8)[0]
        raw_name = record[_CENTRAL_FIXED : _CENTRAL_FIXED + name_len]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        offset = struct.unpack_from("<I", record, 42)[0]
        entries.append((name, record, offset))
        pos = end
    if pos != len(directory):
        raise ZipLayoutError("damaged central directory")
    starts = sorted({offset for _, _, offset in entries})
    if len(starts) != len(entries):
        raise ZipLayoutError("two members share one local header")
    span_end = {start: (starts[i + 1] if i + 1 < len(starts) else cd_offset) for i, start in enumerate(starts)}
    raw = tuple(RawEntry(name, record, offset, span_end[offset]) for name, record, offset in entries)
    for entry in raw:
        handle.seek(entry.local_offset)
        if handle.read(4) != _LOCAL_SIG:
            raise ZipLayoutError(f"member {entry.name!r} has no local header where the directory points")
    return ZipLayout(raw, starts[0] if starts else cd_offset, eocd)


def replace_member(
    source: BinaryIO,
    layout: ZipLayout,
    member: str,
    replacement: Path,
    out: BinaryIO,
    *,
    check: Callable[[int], None] | None = None,
) -> None:
    """Write ``source`` to ``out`` with ``member``'s content taken from ``replacement``.

    ``out`` must be an empty, seekable file. ``check`` is called between
    members (with the member index) so a caller can cancel.
    """
    chosen = _replaceable(source, layout, member)
    _copy_range(source, out, 0, layout.prefix_end)
    new_offsets: dict[int, int] = {}
    new_central: dict[int, bytes] = {}
    for index, entry in enumerate(sorted(layout.entries, key=lambda e: e.local_offset)):
        if check is not None:
            check(index)
        new_offsets[entry.local_offset] = out.tell()
        if entry is chosen:
            new_central[entry.local_offset] = _write_replacement(source, entry, replacement, out)
        else:
            _copy_range(source, out, entry.local_offset, entry.span_end)
    cd_start = out.tell()
    for entry in layout.entries:
        record = bytearray(new_central.get(entry.local_offset, entry.central))
        offset = new_offsets[entry.local_offset]
        if offset >= _LIMIT32:
            raise ZipLayoutError("the rewritten archive would need ZIP64")
        struct.pack_into("<I", record, 42, offset)
        out.write(record)
    cd_size = out.tell() - cd_start
    eocd = bytearray(layout.eocd)
    struct.pack_into("<II", eocd, 12, cd_size, cd_start)
    out.write(eocd)


def check_member_replaceable(source: BinaryIO, member: str) -> None:
    """Raise :class:`ZipLayoutError` if :func:`replace_member` would refuse this archive: a dry run must say
    what the real run will do."""
    try:
        _replaceable(source, read_layout(source), member)
    except struct.error:
        raise ZipLayoutError("damaged ZIP structure") from None


def _replaceable(source: BinaryIO, layout: ZipLayout, member: str) -> RawEntry:
    target = [e for e in layout.entries if e.name == member]
    if len(target) != 1:
        raise ZipLayoutError(f"archive holds {len(target)} members named {member!r}")
    chosen = target[0]
    if chosen.flags & _FLAG_ENCRYPTED:
        raise ZipLayoutError(f"{member} is encrypted inside the ZIP")
    if chosen.method not in (_STORED, _DEFLATED):
        raise ZipLayoutError(f"{member} uses ZIP compression method {chosen.method}")
    source.seek(chosen.local_offset + 26)
    name_len, extra_len = struct.unpack("<HH", source.read(4))
    local_extra = source.read(name_len + extra_len)[name_len:]
    if _has_zip64_extra(local_extra) or _has_zip64_extra(_central_extra(chosen.central)):
        raise ZipLayoutError(f"{member} carries ZIP64 sizes; keyrotate leaves those as they are")
    return chosen


def _write_replacement(source: BinaryIO, entry: RawEntry, replacement: Path, out: BinaryIO) -> bytes:
    """A fresh local header and data for ``entry`` (checked by :func:`_replaceable`); returns its new central
    record."""
    source.seek(entry.local_offset)
    fixed = bytearray(source.read(_LOCAL_FIXED))
    name_len, extra_len = struct.unpack_from("<HH", fixed, 26)
    name_and_extra = source.read(name_len + extra_len)
    flags = (struct.unpack_from("<H", fixed, 6)[0]) & ~_FLAG_DATA_DESCRIPTOR
    header_at = out.tell()
    out.write(fixed)
    out.write(name_and_extra)
    crc, compressed, size = 0, 0, 0
    packer = zlib.compressobj(9, zlib.DEFLATED, -15) if entry.method == _DEFLATED else None
    with replacement.open("rb") as data:
        while chunk := data.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            piece = packer.compress(chunk) if packer is not None else chunk
            compressed += len(piece)
            out.write(piece)
    if packer is not None:
        piece = packer.flush()
        compressed += len(piece)
        out.write(piece)
    if max(size, compressed) >= _LIMIT32:
        raise ZipLayoutError(f"the new {entry.name} would need ZIP64")
    end = out.tell()
    struct.pack_into("<H", fixed, 6, flags)
    struct.pack_into("<III", fixed, 14, crc, compressed, size)
    out.seek(header_at)
    out.write(fixed)
    out.seek(end)
    central = bytearray(entry.central)
    struct.pack_into("<H", central, 8, flags)
    struct.pack_into("<III", central, 16, crc, compressed, size)
    return bytes(central)


def _central_extra(record: bytes) -> bytes:
    name_len, extra_len = struct.unpack_from("<HH", record, 28)
    return record[_CENTRAL_FIXED + name_len : _CENTRAL_FIXED + name_len + extra_len]


def _has_zip64_extra(extra: bytes) -> bool:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 0x0001:
            return True
        pos += 4 + length
    return False


def _copy_range(source: BinaryIO, out: BinaryIO, start: int, end: int) -> None:
    source.seek(start)
    remaining = end - start
    while remaining > 0:
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            raise ZipLayoutError("archive is shorter than its directory says")
        out.write(chunk)
        remaining -= len(chunk)
