"""What the operator still has to do between a rotation's COMMIT and a healthy TREK, step by step.

It depends on how TREK gets its key (TREK-FORMAT.md section 2): ``data/.encryption_key``, or ENCRYPTION_KEY
in its environment (Docker Compose, a systemd unit), which wins over the file. The rotation report's own
short list is :func:`keyrotate.rotation.outcome.rotation_report`'s ``next_steps``.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def _verify_command(data_dir: Path | None, db_path: Path | None, new_key_file: Path | None) -> str:
    """The verify that checks TREK's key: from its data directory, or (a --db run) the database with the new key."""
    if data_dir is not None:
        return shlex.join(["keyrotate", "verify", "--data-dir", str(data_dir)])
    if db_path is None:
        return "keyrotate verify --data-dir DIR"
    key = ["--key-file", str(new_key_file)] if new_key_file else []  # else it asks for the key
    return shlex.join(["keyrotate", "verify", "--db", str(db_path), *key])


def next_steps(
    *, data_dir: Path | None, new_key_file: Path | None, key_file_written: bool, shell_has_old_key: bool,
    db_path: Path | None = None,
    backup: str | None, old_key_saved: str | None = None, left_unopened: int = 0,
) -> list[str]:
    """What to do between the commit and a healthy TREK, for Docker Compose and for a plain host.

    ``left_unopened``: secrets that opened under no key and were left as they were (--skip-undecryptable):
    ``verify`` names them (exit 9) until they are entered again in TREK or removed.
    """
    where = f"{data_dir}/.encryption_key" if data_dir else "data/.encryption_key"
    # The text keyrotate wrote to .encryption_key is the key exactly as TREK reads it; a key file given may hold a
    # line break, a BOM or spaces around it, which TREK keeps when it takes ENCRYPTION_KEY from its environment.
    key_src = (f"the text now in {where}" if key_file_written else
               f"the key in {new_key_file} (without the line break or spaces around it)" if new_key_file else
               "the new key")
    steps = []
    if not key_file_written:
        steps.append(f"Put {key_src} into {where} (mode 600), or TREK cannot read its secrets.")
    if shell_has_old_key:
        steps.append("This shell's ENCRYPTION_KEY still holds the OLD key: `unset ENCRYPTION_KEY`, and remove it "
                     "from ~/.profile or wherever you exported it.")
    steps += [
        "Docker Compose: if docker-compose.yml or .env sets ENCRYPTION_KEY, set it to "
        f"{key_src} or delete the line (TREK then reads {where}); then `docker compose up -d trek` "
        "(recreates the container; `docker compose restart` keeps the old environment), and watch "
        "`docker compose logs -f trek`.",
        "Plain host (systemd): if the unit or its EnvironmentFile sets ENCRYPTION_KEY, change or remove it "
        "(`systemctl edit trek`), then `systemctl daemon-reload && systemctl restart trek`.",
        "If the old key stays in TREK's environment, TREK writes it back into .encryption_key at start and "
        "cannot read any secret.",
        f"Check: `{_verify_command(data_dir, db_path, new_key_file)}` once TREK is "
        "running again: " + ("it must say OK." if not left_unopened else
                             f"it must name only the {left_unopened} value(s) this run left under no key, and exits "
                             "9 until each is entered again in TREK or removed."),
    ]
    if backup:
        steps.append(f"Once TREK runs fine, delete {backup}: it still opens with the old key.")
    if old_key_saved:
        steps.append(f"The old key is saved in {old_key_saved}" + (f" (the key {backup} opens with)" if backup else "")
                     + ": keep it while you keep anything made under the old key (that backup, TREK's backup ZIPs "
                     "not re-encrypted, off-site copies), then delete it.")
    if new_key_file:
        steps.append(f"Keep {new_key_file} somewhere safe (a password manager), then delete the file.")
    return steps
