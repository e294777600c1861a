"""The leak checklist for a person: secrets grouped by what they are and whose, worst first.

A :class:`GroupTally` counts secrets per (tier, owner, kind) as they stream
past, so its size follows the number of users and kinds, never the number of
secrets. The tiers rank what an attacker can do with a secret.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain

from keyrotate.operations.exposure_records import owner_label

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
DENSE_IDS = 1 << 22  # owner ids counted in arrays (4 bytes per id and kind); larger or negative ids in a dict
_NONE: array[int] = array("I")


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
    """Counts per (tier, owner, kind): a small integer per user and kind, no object per user or secret.

    A kind (tier, what) gets an index; owners with ids below ``DENSE_IDS`` (every TREK instance: ids
    count up from 1) count in one array of 32-bit counters per kind, indexed by id; other ids in a dict.
    Per user only its name is kept (``names``). Lines are made one at a time when written.
    """

    kinds: dict[tuple[tuple[int, str], str], int] = field(default_factory=dict)  # (tier, what) -> index
    described: list[tuple[tuple[int, str], str]] = field(default_factory=list)  # index -> (tier, what)
    instance: dict[int, int] = field(default_factory=dict)  # kind -> count
    dense: dict[int, array[int]] = field(default_factory=dict)  # kind -> count per owner id
    sparse: dict[tuple[int, int], int] = field(default_factory=dict)  # (owner id, kind) -> count
    names: dict[int, str | None] = field(default_factory=dict)  # owner id -> username, filled by whoever counts
    seen: bytearray = field(default_factory=bytearray)  # 1 per dense owner id with secrets
    seen_sparse: set[int] = field(default_factory=set)
    actions: dict[str, str] = field(default_factory=dict)  # what -> where to revoke it (the first one seen)
    tiers: dict[tuple[int, str], int] = field(default_factory=dict)  # tier -> count
    total: int = 0

    def add(self, tier: tuple[int, str], owner_id: int | None, what: str, action: str, count: int = 1) -> None:
        kind = self._kind(tier, what, action)
        if owner_id is None:
            self.instance[kind] = self.instance.get(kind, 0) + count
        elif 0 <= owner_id < DENSE_IDS:
            self._dense(kind, owner_id)[owner_id] += count
            self.seen[owner_id] = 1
        else:
            self.sparse[(owner_id, kind)] = self.sparse.get((owner_id, kind), 0) + count
            self.seen_sparse.add(owner_id)
        self.tiers[tier] = self.tiers.get(tier, 0) + count
        self.total += count

    def add_users(self, tier: tuple[int, str], what: str, action: str, counts: Sequence[tuple[int, int]]) -> None:
        """Many users' counts of one kind at once: (owner id, count) pairs, as a bulk read finds them."""
        if not counts:
            return
        low, top = min(counts)[0], max(counts)[0]
        if low < 0 or top >= DENSE_IDS:
            for owner_id, count in counts:
                self.add(tier, owner_id, what, action, count)
            return
        dense, seen, total = self._dense(self._kind(tier, what, action), top), self.seen, 0
        for owner_id, count in counts:  # one pass of plain array updates: called for every secret read in bulk
            dense[owner_id] += count
            seen[owner_id] = 1
            total += count
        self.tiers[tier] = self.tiers.get(tier, 0) + total
        self.total += total

    def _kind(self, tier: tuple[int, str], what: str, action: str) -> int:
        kind = self.kinds.get((tier, what))
        if kind is None:
            kind = self.kinds[(tier, what)] = len(self.described)
            self.described.append((tier, what))
            self.actions.setdefault(what, action)
        return kind

    def _dense(self, kind: int, owner_id: int) -> array[int]:
        """The kind's counters, long enough for ``owner_id`` (and ``seen`` too)."""
        counts = self.dense.get(kind)
        if counts is None:
            counts = self.dense[kind] = array("I")
        if owner_id >= len(counts):
            counts.frombytes(bytes(counts.itemsize * (owner_id + 1 - len(counts))))
        if owner_id >= len(self.seen):
            self.seen.extend(bytes(owner_id + 1 - len(self.seen)))
        return counts

    def lines(self) -> Iterator[GroupLine]:
        """Instance secrets one line each, then one line per owner and tier (by owner id); worst tier first."""
        for tier in sorted(self.tiers):
            yield from self.tier_lines(tier)

    def tier_lines(self, tier: tuple[int, str]) -> Iterator[GroupLine]:
        kinds = sorted((k for k, (t, _) in enumerate(self.described) if t == tier), key=lambda k: self.described[k][1])
        for kind in kinds:
            # Instance secrets stay one line each: each is revoked somewhere else.
            if self.instance.get(kind):
                what = self.described[kind][1]
                yield GroupLine(tier, "instance", None, [(what, self.instance[kind])], [(what, self.actions[what])])
        yield from self._owner_lines(tier, kinds)

    def _owner_lines(self, tier: tuple[int, str], kinds: list[int]) -> Iterator[GroupLine]:
        columns = [(self.described[k][1], self.dense.get(k, _NONE), k) for k in kinds]
        sparse = sorted({owner for owner, kind in self.sparse if self.described[kind][0] == tier})
        width = max((len(counts) for _, counts, _ in columns), default=0)
        for owner_id in chain((o for o in sparse if o < 0), range(width), (o for o in sparse if o >= 0)):
            dense = 0 <= owner_id < DENSE_IDS
            found = [(what, n) for what, counts, kind in columns
                     if (n := (counts[owner_id] if owner_id < len(counts) else 0) if dense
                         else self.sparse.get((owner_id, kind), 0))]
            if found:
                yield GroupLine(tier, owner_label(owner_id, self.names.get(owner_id)), owner_id, found,
                                [(what, self.actions[what]) for what, _ in found])

    def user_actions(self, tier: tuple[int, str]) -> list[tuple[str, str]]:
        """(what, where to revoke it) of the kinds users have in this tier, sorted."""
        users = {kind for kind, counts in self.dense.items() if any(counts)} | {kind for _, kind in self.sparse}
        return sorted({(what, self.actions[what]) for kind, (t, what) in enumerate(self.described)
                       if t == tier and kind in users})

    def users(self) -> int:
        return self.seen.count(1) + len(self.seen_sparse)

    def per_tier(self) -> dict[str, int]:
        return {tier[1]: self.tiers[tier] for tier in TIERS if self.tiers.get(tier)}
