"""keyrotate's rotations recorded in TREK's own admin audit log (TREK-FORMAT.md section 7).

An admin sees them in TREK's UI: one ``audit_log`` row per rotation, no user, no ip, counts only, never a key.
"""

from __future__ import annotations

import json
import sqlite3

from keyrotate.trek.schema import fold_name

ROTATE_ENCRYPTION_KEY = "keyrotate.rotate_encryption_key"
ROTATE_JWT_SECRET = "keyrotate.rotate_jwt_secret"


def record_in_audit_log(conn: sqlite3.Connection, action: str, details: dict[str, object]) -> bool:
    """One row in TREK's ``audit_log`` (no user, no ip) on ``conn``, inside its open transaction.

    False when this database has no such table. ``details`` holds counts, never a key.
    """
    columns = {fold_name(row[1]) for row in conn.execute("PRAGMA table_info(audit_log)")}
    if not {"action", "details"} <= columns:
        return False
    text = json.dumps(details, sort_keys=True)
    if "resource" in columns:
        conn.execute("INSERT INTO audit_log (action, resource, details) VALUES (?, 'keyrotate', ?)", (action, text))
    else:
        conn.execute("INSERT INTO audit_log (action, details) VALUES (?, ?)", (action, text))
    return True


# TREK's own admin action replaces .jwt_secret too (TREK-FORMAT.md section 7).
SESSION_SECRET_REPLACED = (ROTATE_JWT_SECRET, "admin.rotate_jwt_secret")


def session_secret_replaced_after_rotation(conn: sqlite3.Connection) -> bool:
    """TREK's audit log shows the session secret replaced (by keyrotate or TREK's admin action) after keyrotate's
    last rotation that re-encrypted secrets, i.e. after every key the database was under before it. False when
    the log cannot tell (no table, no such rows, rows written with --no-audit-log left out)."""
    try:
        rotations = conn.execute("SELECT rowid, details FROM audit_log WHERE action = ? ORDER BY rowid DESC",
                                 (ROTATE_ENCRYPTION_KEY,))
        last = next((rowid for rowid, details in rotations if _rotated_secrets(details)), None)
        if last is None:
            return False
        found = conn.execute("SELECT 1 FROM audit_log WHERE action IN (?, ?) AND rowid > ? LIMIT 1",
                             (*SESSION_SECRET_REPLACED, last)).fetchone()
    except sqlite3.Error:  # no audit_log, or not the shape keyrotate writes
        return False
    return found is not None


def _rotated_secrets(details: object) -> bool:
    """A rotation row that moved secrets to another key (a run with the key in use rotates none)."""
    try:
        rotated = json.loads(str(details)).get("secrets_rotated")
    except (ValueError, AttributeError):
        return False
    return isinstance(rotated, int) and rotated > 0
