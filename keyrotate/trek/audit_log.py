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
