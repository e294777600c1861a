"""Building TREK-style backup ZIPs from the fixtures, and reading members' raw bytes independently of keyrotate."""

from __future__ import annotations

import io
import sqlite3
import struct
import zipfile
from contextlib import closing
from pathlib import Path

# name: (content, method, level). Level 1 differs from zipfile's default, so recompressing would show.
UPLOADS = {
    "uploads/photos/IMG_0001.jpg": (bytes(range(256)) * 40, zipfile.ZIP_STORED, None),
    "uploads/files/itinerary.pdf": (b"%PDF-1.4 itinerary " * 300 + bytes(range(256)) * 8, zipfile.ZIP_DEFLATED, 1),
    "uploads/avatars/7.png": (b"\x89PNG\r\n" + bytes(1000), zipfile.ZIP_DEFLATED, 9),
}


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors, as streaming archivers do."""

    def __init__(self, sink: io.BytesIO) -> None:
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.sink.write(data)


def snapshot(db: Path, destination: Path) -> Path:
    """A consistent single-file copy of a database, as TREK's backup takes it."""
    with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(destination)) as target:
        source.backup(target)
    return destination


def build_backup_zip(db: Path, zip_path: Path, *, streamed: bool = False) -> Path:
    """travel.db first, then an uploads/ tree with directory entries and mixed compression."""
    copy = snapshot(db, zip_path.with_name(zip_path.name + ".travel.db"))
    sink = io.BytesIO()
    target = _Unseekable(sink) if streamed else sink
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        info = zipfile.ZipInfo("travel.db", date_time=(2026, 3, 14, 2, 30, 0))
        info.external_attr = 0o644 << 16
        archive.writestr(info, copy.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr(zipfile.ZipInfo("uploads/", date_time=(2026, 1, 2, 3, 4, 6)), b"")
        for n, (name, (content, method, level)) in enumerate(UPLOADS.items()):
            member = zipfile.ZipInfo(name, date_time=(2025, 12, 1 + n, 10, 0, 0))
            member.external_attr = 0o600 << 16
            archive.writestr(member, content, compress_type=method, compresslevel=level)
    copy.unlink()
    zip_path.write_bytes(sink.getvalue())
    return zip_path


def raw_members(zip_path: Path) -> dict[str, bytes]:
    """Each member's local header and compressed data, read straight from the file."""
    data = zip_path.read_bytes()
    out = {}
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
            body = start + 30 + name_len + extra_len
            out[info.filename] = data[start : body + info.compress_size]
    return out


def build_zip64_backup(db: Path, zip_path: Path) -> bytes:
    """A backup ZIP whose travel.db member carries ZIP64 extra fields; returns its bytes."""
    db_copy = snapshot(db, zip_path.with_name(f"{zip_path.stem}-snap.db"))
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("travel.db", "w", force_zip64=True) as member:
            member.write(db_copy.read_bytes())
        archive.writestr("uploads/a.txt", b"a")
    return zip_path.read_bytes()
