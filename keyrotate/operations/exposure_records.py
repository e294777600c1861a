"""What exposure says about each secret: one record per secret, or rows of one location that share most of it.

:class:`SecretRows` is what streams: everything a location's secrets have in
common once (table, column, action, the names of the identifying columns), then
one plain tuple per secret. A writer formats the rows directly;
:meth:`SecretRows.secrets` turns them into :class:`ExposedSecret` records for
callers that want objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# What a secret of a SecretRows says before its own row: what, owner, owner_id, owner_name, group.
# Many secrets share one (same owner, same kind), so it is one tuple for all of them.
SecretHead = tuple[str, str, int | None, str | None, str]


@dataclass(frozen=True)
class ExposedSecret:
    what: str
    owner: str  # "instance" or "user 4 (alice)"
    where: str  # table.column, row identity, path inside JSON
    action: str  # where to revoke or reissue it
    location: str  # catalogue label, or "table.column (outside the catalogue)"
    owner_id: int | None = None
    owner_name: str | None = None
    table: str = ""
    column: str = ""
    row: dict[str, Any] = field(default_factory=dict)  # the row's identifying columns
    path: str = ""  # inside a JSON value, e.g. $[1].options.secretAccessKey
    group: str = ""  # the checklist tier (exposure_groups.TIERS)

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "owner": self.owner, "owner_id": self.owner_id, "owner_name": self.owner_name,
                "location": self.location, "table": self.table, "column": self.column, "row": self.row,
                "path": self.path, "where": self.where, "action": self.action, "group": self.group}


@dataclass(frozen=True)
class SecretRows:
    """Secrets of one location, found together: the shared fields once, then a few columns, one item per secret."""

    location: str
    table: str
    column: str
    action: str
    identity: tuple[str, ...]  # names of the identifying columns, e.g. ("user_id", "key"), or ("rowid",)
    heads: Sequence[SecretHead]
    values: Sequence[tuple[Any, ...]]  # per secret, its identifying columns' values
    paths: Sequence[str] | None = None  # per secret, where inside a JSON value; None: whole values

    @classmethod
    def of(cls, secret: ExposedSecret) -> SecretRows:
        head: SecretHead = (secret.what, secret.owner, secret.owner_id, secret.owner_name, secret.group)
        return cls(secret.location, secret.table, secret.column, secret.action, tuple(secret.row), [head],
                   [tuple(secret.row.values())], [secret.path])

    def path_list(self) -> Sequence[str]:
        return [""] * len(self.heads) if self.paths is None else self.paths

    def wheres(self) -> list[str]:
        """``trek_photos.passphrase (id=7)``, ``settings.value (user_id=3, key=ntfy_token)``, then any JSON path."""
        base = f"{self.table}.{self.column} ("
        heads = [f"{name}=" for name in self.identity]
        if len(heads) == 1:  # nearly every row of a large database: no join
            head = base + heads[0]
            texts = [f"{head}{values[0]})" for values in self.values]
        else:
            texts = [base + ", ".join(f"{h}{v}" for h, v in zip(heads, values, strict=True)) + ")"
                     for values in self.values]
        if self.paths is None:
            return texts
        return [f"{text} {path}" if path else text for text, path in zip(texts, self.paths, strict=True)]

    def secrets(self) -> Iterator[ExposedSecret]:
        for (what, owner, owner_id, name, group), values, path, where in zip(
                self.heads, self.values, self.path_list(), self.wheres(), strict=True):
            yield ExposedSecret(what, owner, where, self.action, self.location, owner_id, name, self.table,
                                self.column, dict(zip(self.identity, values, strict=True)), path, group)


def owner_label(owner_id: int | None, name: object) -> str:
    return "instance" if owner_id is None else f"user {owner_id}" + (f" ({name})" if name else "")
