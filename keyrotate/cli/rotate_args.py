"""rotate's command line as one frozen object, and the database and keys one run resolves it to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keyrotate.trek.keys import Key


@dataclass(frozen=True)
class RotateArgs:
    """rotate's command line as click parsed it (the parameter names of the options below)."""

    db: Path | None
    data_dir: Path | None
    old_key_file: tuple[Path, ...]
    old_key_env: tuple[str, ...]
    new_key_file: Path | None
    new_key_env: str | None
    backup_path: Path | None
    no_backup: bool
    discard_old_key: bool
    dry_run: bool
    skip_undecryptable: bool
    encrypt_plaintext: bool
    yes: bool
    allow_running: bool
    vacuum: bool
    generate_new_key: bool
    new_key_out: Path | None
    rekey_backups: bool
    incident: bool
    rotate_jwt_secret: bool
    no_audit_log: bool
    revoke_share_links: bool
    expire_invites: bool
    wait: float
    workers: int | None
    json_output: bool
    quiet: bool

    @property
    def silent(self) -> bool:
        """No summary on stderr: --quiet, or --json (stdout then holds the report)."""
        return self.quiet or self.json_output


@dataclass(frozen=True)
class RotationKeys:
    old: list[Key]
    new: Key
    generated: bool  # --generate-new-key made the new key, saved in --new-key-out
    interactive: bool  # a key was typed at the prompt: ask before writing


@dataclass(frozen=True)
class RotationRun:
    """One ``rotate`` run: its command line, its database and its keys."""

    args: RotateArgs
    path: Path
    keys: RotationKeys

    @property
    def new_key_file(self) -> Path | None:
        """Where the new key is on disk, for the operator's steps (None: typed or from the environment)."""
        return self.args.new_key_out if self.keys.generated else self.args.new_key_file

    @property
    def unused_new_key(self) -> Path | None:
        """The generated key's file, to name when the rotation did not happen."""
        return self.args.new_key_out if self.keys.generated else None
