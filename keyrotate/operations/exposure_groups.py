"""The leak checklist for a person: secrets grouped by what they are and whose, worst first.

A :class:`GroupTally` counts secrets per (tier, owner, kind) as they stream
past, so its size follows the number of users and kinds, never the number of
secrets. The tiers rank what an attacker can do with a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# (rank, title): instance credentials act as the whole server; sign-in secrets and OAuth tokens act as a user
# elsewhere; API keys cost money or read a user's data; share passphrases open photos already shared.
INSTANCE = (0, "Instance credentials")
SIGN_IN = (1, "Sign-in secrets and OAuth tokens")
API_KEYS = (2, "API keys and tokens")
PASSPHRASES = (3, "Share passphrases")
UNKNOWN = (4, "Found outside the catalogue")
TIERS = (INSTANCE, SIGN_IN, API_KEYS, PASSPHRASES, UNKNOWN)
_SIGN_IN_COLUMNS = {("users", "mfa_secret"), ("users", "synology_password"), ("users", "synology_sid"),
                    ("users", "synology_did")}
_PASSPHRASE_TABLES = {"trip_album_links", "trek_photos"}


def tier_of(table: str, column: str, owner_id: int | None, catalogued: bool) -> tuple[int, str]:
    if not catalogued:
        return UNKNOWN
    if owner_id is None:
        return INSTANCE
    if (table, column) in _SIGN_IN_COLUMNS or table == "plugin_oauth_tokens":
        return SIGN_IN
    if table in _PASSPHRASE_TABLES:
        return PASSPHRASES
    return API_KEYS


def plural(what: str, count: int) -> str:
    """``"20 photo passphrases (synologyphotos)"``: the noun before any qualifier takes the s."""
    if count == 1:
        return what
    cut = min((i for i in (what.find(" ("), what.find(" for "), what.find(" '")) if i > 0), default=len(what))
    head, tail = what[:cut], what[cut:]
    return f"{count} {head}{'es' if head.endswith(('s', 'sh', 'ch', 'x')) else 's'}{tail}"


@dataclass
class GroupLine:
    """One checklist line: an instance secret, or one owner's secrets of one tier."""

    tier: tuple[int, str]
    owner: str  # "instance" or "user 17 (anna)"
    owner_id: int | None
    kinds: list[tuple[str, int]]  # (what, count), worst first within the tier
    actions: list[tuple[str, str]]  # (what, where to revoke it), one per kind

    @property
    def count(self) -> int:
        return sum(n for _, n in self.kinds)

    def summary(self) -> str:
        return "; ".join(plural(what, n) for what, n in self.kinds)

    def to_json(self) -> dict[str, object]:
        return {"group": self.tier[1], "owner": self.owner, "owner_id": self.owner_id,
                "kinds": [{"what": w, "count": n, "action": a} for (w, n), (_, a) in
                          zip(self.kinds, self.actions, strict=True)]}


@dataclass
class GroupTally:
    """Counts per (tier, owner, kind); bounded by users times kinds."""

    counts: dict[tuple[tuple[int, str], int | None, str], int] = field(default_factory=dict)
    owners: dict[int, str] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    total: int = 0

    def add(self, tier: tuple[int, str], owner_id: int | None, owner: str, what: str, action: str,
            count: int = 1) -> None:
        key = (tier, owner_id, what)
        self.counts[key] = self.counts.get(key, 0) + count
        if owner_id is not None:
            self.owners[owner_id] = owner
        self.actions.setdefault(what, action)
        self.total += count

    def lines(self) -> list[GroupLine]:
        """Instance secrets one line each, then one line per owner and tier; worst tier first."""
        # Sorted on plain tuples (no key function): a large instance has a hundred thousand of them.
        order = sorted((tier[0], owner_id is not None, owner_id or 0, what, tier, owner_id, count)
                       for (tier, owner_id, what), count in self.counts.items())
        out: list[GroupLine] = []
        line: GroupLine | None = None
        for _, _, _, what, tier, owner_id, count in order:
            # Instance secrets stay one line each: each is revoked somewhere else.
            if line is None or owner_id is None or line.owner_id != owner_id or line.tier != tier:
                line = GroupLine(tier, "instance" if owner_id is None else self.owners[owner_id], owner_id, [], [])
                out.append(line)
            line.kinds.append((what, count))
            line.actions.append((what, self.actions[what]))
        return out

    def users(self) -> int:
        return len(self.owners)

    def per_tier(self) -> dict[str, int]:
        out = {title: 0 for _, title in TIERS}
        for (tier, _, _), count in self.counts.items():
            out[tier[1]] += count
        return {title: n for title, n in out.items() if n}
