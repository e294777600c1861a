"""``keyrotate demo``'s steps on a throwaway TREK-shaped database, each returning its report (the CLI narrates)."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.report import RotationReport, VerifyReport
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key, create_key_file, generate_key_text, key_from_file, resolve_trek_key
from keyrotate.trek.sample import add_plugin_users, build_sample_database


@contextmanager
def demo_directory(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created, and left behind), or a temporary directory removed afterwards."""
    if keep is not None:
        keep.mkdir(mode=0o700, parents=True, exist_ok=False)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="keyrotate-demo-") as workdir:
        yield Path(workdir)


class Demo:
    """A TREK data directory under a fresh key in ``workdir``, and the steps of a rotation run on it."""

    def __init__(self, workdir: Path) -> None:
        self.data = workdir / "data"
        self.database = self.data / "travel.db"
        self.new_key_path = workdir / "new.key"
        self.data.mkdir(mode=0o700)
        create_key_file(self.data / ".encryption_key", generate_key_text())
        self.old = dataclasses.replace(resolve_trek_key(self.data).key, source=f"the key TREK uses from {self.data}")
        build_sample_database(self.database, self.old, users=12, seed=7)
        add_plugin_users(self.database, self.old, range(1, 5), seed=7)

    def verify_before(self) -> VerifyReport:
        return verify_database(self.database, [self.old])

    def make_new_key(self) -> Key:
        create_key_file(self.new_key_path, generate_key_text())
        return key_from_file(self.new_key_path, "new")[0]

    def rehearse(self, new_key: Key) -> RotationReport:
        return rotate_database(RotateOptions(self.database, (self.old,), new_key, None, dry_run=True))

    def rotate(self, new_key: Key) -> RotationReport:
        backup = self.data / "travel.db.keyrotate-backup-demo"
        return rotate_database(RotateOptions(self.database, (self.old,), new_key, backup,
                                             key_file=self.data / ".encryption_key"))

    def verify_after(self) -> VerifyReport:
        """With the key TREK will now read, labelled as before so the two tables compare."""
        now = dataclasses.replace(resolve_trek_key(self.data).key, source=self.old.source)
        return verify_database(self.database, [now])
