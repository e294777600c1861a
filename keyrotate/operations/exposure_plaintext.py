"""Whose secrets are stored in plaintext: readable from a copy of the database without any key.

Counted per owner with one ``GROUP BY`` per whole-value location (nothing per value is held), into a
:class:`GroupTally` of their own: they are not "readable with the suspected key", they are readable with
none. Values inside JSON and TOTP seeds are only counted (by ``audit``'s findings), not listed per owner.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable

from keyrotate.operations.exposure_groups import GroupTally
from keyrotate.store.database import quote_identifier
from keyrotate.trek.catalogue import Presence, ResolvedLocation
from keyrotate.trek.formats import Scheme

PLAINTEXT = (5, "Stored in PLAINTEXT (readable without any key)")
ACTION = "readable without any key: revoke or reissue it"


def plaintext_owners(conn: sqlite3.Connection, resolved: Iterable[ResolvedLocation], labels: Collection[str],
                     groups: GroupTally, names: Callable[[Iterable[int]], None]) -> None:
    """Count each owner's plaintext values of the whole-value locations ``labels`` names into ``groups`` (tier
    PLAINTEXT); ``names`` is given the owners' ids, to know their names."""
    for entry in resolved:
        loc = entry.location
        if loc.label not in labels or entry.presence is Presence.ABSENT or not loc.whole_value:
            continue
        if entry.presence is Presence.ACTIVE and loc.scheme is not Scheme.API:
            continue  # a plaintext TOTP seed is told from a ciphertext by decoding it: counted, not listed
        col = quote_identifier(loc.column)
        where = f"typeof({col}) = 'text' AND {col} != ''"
        if entry.presence is Presence.ACTIVE:  # legacy plaintext where ciphertext belongs
            where += f" AND substr({col}, 1, 7) != 'enc:v1:'"
        params: tuple[str, ...] = ()
        if loc.setting_key is not None:
            where += f" AND {quote_identifier(loc.key_column)} = ?"
            params = (loc.setting_key,)
        owner = quote_identifier(loc.owner_column) if loc.owner_column else "NULL"
        rows = conn.execute(f"SELECT {owner}, count(*) FROM {quote_identifier(loc.table)} WHERE {where} "
                            f"GROUP BY 1 ORDER BY 1", params)
        users = []
        for owner_id, count in rows:
            if isinstance(owner_id, int):
                users.append((owner_id, int(count)))
            else:
                groups.add(PLAINTEXT, None, loc.what, f"{ACTION} ({loc.revoke_hint})", int(count))
        names(owner_id for owner_id, _ in users)
        groups.add_users(PLAINTEXT, loc.what, f"{ACTION} ({loc.revoke_hint})", users)
