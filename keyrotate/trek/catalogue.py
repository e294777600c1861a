"""Every place TREK stores an encrypted secret (TREK-FORMAT.md section 4).

A :class:`SecretLocation` is one table/column, narrowed to one ``key`` row for
the key-value tables, and optionally to paths inside a JSON value. Which of
them a database actually has is decided by :func:`resolve_catalogue` against
the schema found, never assumed from a version number alone.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from keyrotate.trek.formats import Scheme


class JsonSecrets(enum.Enum):
    """How to find the encrypted fields inside a JSON value."""

    S3_BACKENDS = "s3-backends"  # storage.backends: [i].options.secretAccessKey where [i].type == "s3"
    PLUGIN_INSTANCE = "plugin-instance"  # plugins.config: fields marked secret with scope instance
    PLUGIN_USER = "plugin-user"  # plugin_user_config.config: fields marked secret with scope user
    FIELDS = "fields"  # fixed top-level fields, listed in SecretLocation.json_fields


@dataclass(frozen=True, order=True)
class Release:
    """A TREK release as far as the database shows it (TREK-FORMAT.md section 8)."""

    rank: int  # orders releases; 4.x ranks above every 3.x whatever its marker says
    name: str
    schema_version: int | None  # what the release's own migrations leave in schema_version


R3_0_15 = Release(129, "3.0.15", 129)
R3_0_22 = Release(131, "3.0.22", 131)
R3_1_0 = Release(138, "3.1.0", 138)
R3_2_0 = Release(160, "3.2.0", 160)
R3_2_1 = Release(164, "3.2.1", 164)
R3_3_0 = Release(171, "3.3.0", 171)
R3_4_0 = Release(175, "3.4.0", 175)
R4 = Release(1000, "4.x", None)  # exact 4.x markers are unknown: known only from its tables
OLDEST = Release(0, "3.0.15", None)  # what a database with no evidence at all is taken for
MARKED_RELEASES = (R3_0_15, R3_0_22, R3_1_0, R3_2_0, R3_2_1, R3_3_0, R3_4_0)


@dataclass(frozen=True)
class SecretLocation:
    table: str
    column: str
    scheme: Scheme
    what: str
    revoke_hint: str
    identity: tuple[str, ...] = ("id",)
    owner_column: str | None = None  # column holding users.id; None for instance-wide secrets
    setting_key: str | None = None  # the value of ``key_column`` that picks the row (settings, app_settings, addons)
    json_secrets: JsonSecrets | None = None
    since: Release = OLDEST  # first TREK release that has this location
    # First release that encrypts it, where that is later than ``since`` (users.unsplash_api_key only).
    encrypted_since: Release | None = None
    key_column: str = "key"
    json_fields: tuple[str, ...] = ()  # JsonSecrets.FIELDS: the top-level fields that hold secrets

    @cached_property  # read once per secret by the scan's token reports
    def label(self) -> str:
        base = f"{self.table}.{self.column}"
        if self.setting_key is not None:
            base += f"[{self.setting_key}]"
        if self.json_secrets is JsonSecrets.S3_BACKENDS:
            base += " s3 secretAccessKey"
        elif self.json_secrets is JsonSecrets.FIELDS:
            base += " " + ", ".join(f"$.{name}" for name in self.json_fields)
        elif self.json_secrets is not None:
            base += " secret fields"
        return base

    @property
    def whole_value(self) -> bool:
        return self.json_secrets is None


def _user(column: str, what: str, hint: str, *, scheme: Scheme = Scheme.API, since: Release = OLDEST,
          encrypted_since: Release | None = None) -> SecretLocation:
    return SecretLocation(
        "users", column, scheme, what, hint, owner_column="id", since=since, encrypted_since=encrypted_since
    )


def _setting(key: str, what: str, hint: str, *, since: Release = OLDEST) -> SecretLocation:
    return SecretLocation(
        "settings", "value", Scheme.API, what, hint,
        identity=("user_id", "key"), owner_column="user_id", setting_key=key, since=since,
    )


def _app_setting(key: str, what: str, hint: str, *, since: Release = OLDEST) -> SecretLocation:
    return SecretLocation(
        "app_settings", "value", Scheme.API, what, hint, identity=("key",), setting_key=key, since=since
    )


_LLM_HINT = "the LLM provider's API key console (or the LLM gateway's token settings)"


CATALOGUE: tuple[SecretLocation, ...] = (
    _user("maps_api_key", "Google Maps API key", "Google Cloud console > APIs & Services > Credentials"),
    _user("openweather_api_key", "OpenWeather API key", "openweathermap.org > My API keys"),
    _user("immich_api_key", "Immich API key", "Immich > Account settings > API keys"),
    _user("synology_password", "Synology password", "the Synology DSM account's password"),
    _user("synology_sid", "Synology session id", "sign the user out of Synology Photos (DSM > Security > Account)"),
    _user("synology_did", "Synology device id", "remove the trusted device in DSM > Personal > Security"),
    _user("mfa_secret", "TOTP seed (two-factor authentication)",
          "the user must disable and re-enrol MFA in TREK", scheme=Scheme.MFA),
    _user("unsplash_api_key", "Unsplash access key", "unsplash.com/oauth/applications", encrypted_since=R3_2_1),
    _user("amap_api_key", "AMap API key", "console.amap.com > key management", since=R4),
    _user("airtrail_api_key", "AirTrail API key", "AirTrail > Settings > API keys", since=R3_1_0),
    _setting("webhook_url", "personal webhook URL (contains its token)", "regenerate the webhook in the receiving service"),
    _setting("ntfy_token", "ntfy access token", "ntfy server > Account > Access tokens"),
    _setting("mapbox_access_token", "Mapbox access token", "account.mapbox.com > Access tokens"),
    _setting("carto_api_key", "CARTO API key", "CARTO workspace > Developers > Credentials", since=R4),
    _setting("llm_api_key", "LLM provider API key", "the LLM provider's API key console", since=R3_2_0),
    _setting("llm_gateway_token", "LLM gateway token", _LLM_HINT, since=R4),
    _app_setting("oidc_client_secret", "OIDC client secret", "the identity provider's client settings"),
    _app_setting("smtp_pass", "SMTP password", "the mail provider's account or app password"),
    _app_setting("admin_webhook_url", "admin webhook URL (contains its token)", "regenerate the webhook in the receiving service"),
    _app_setting("admin_ntfy_token", "admin ntfy access token", "ntfy server > Account > Access tokens"),
    _app_setting("maps_api_key", "instance Google Maps API key", "Google Cloud console > APIs & Services > Credentials", since=R4),
    _app_setting("unsplash_api_key", "instance Unsplash access key", "unsplash.com/oauth/applications", since=R4),
    _app_setting("amap_api_key", "instance AMap API key", "console.amap.com > key management", since=R4),
    _app_setting("default_user_setting_mapbox_access_token", "default Mapbox access token given to new users",
                 "account.mapbox.com > Access tokens (users created since may hold a copy)", since=R3_1_0),
    _app_setting("default_user_setting_llm_api_key", "default LLM provider API key given to new users",
                 "the LLM provider's API key console (users created since may hold a copy)", since=R3_2_0),
    _app_setting("default_user_setting_llm_gateway_token", "default LLM gateway token given to new users",
                 _LLM_HINT + " (users created since may hold a copy)", since=R4),
    SecretLocation(
        "app_settings", "value", Scheme.API, "S3 secret access key", "the S3 provider's IAM / access keys page",
        identity=("key",), setting_key="storage.backends", json_secrets=JsonSecrets.S3_BACKENDS, since=R4,
    ),
    SecretLocation(
        "trip_album_links", "passphrase", Scheme.API, "shared album passphrase",
        "change the album's share passphrase in the photo service", owner_column="user_id",
    ),
    SecretLocation(
        "trek_photos", "passphrase", Scheme.API, "photo passphrase",
        "change the photo's share passphrase in the photo service", owner_column="owner_id",
    ),
    SecretLocation(
        "addons", "config", Scheme.API, "LLM parsing add-on credential (provider API key or gateway token)",
        "the LLM provider's API key console or the LLM gateway's token settings; then re-enter it in TREK's admin",
        key_column="id", setting_key="llm_parsing", json_secrets=JsonSecrets.FIELDS,
        json_fields=("apiKey", "gatewayToken"), since=R3_2_0,
    ),
    SecretLocation(
        "plugin_oauth_tokens", "access_token", Scheme.API, "plugin OAuth access token",
        "disconnect and reconnect the plugin; revoke the grant at the provider",
        identity=("plugin_id", "user_id"), owner_column="user_id", since=R3_3_0,
    ),
    SecretLocation(
        "plugin_oauth_tokens", "refresh_token", Scheme.API, "plugin OAuth refresh token",
        "disconnect and reconnect the plugin; revoke the grant at the provider",
        identity=("plugin_id", "user_id"), owner_column="user_id", since=R3_3_0,
    ),
    SecretLocation(
        "plugins", "config", Scheme.API, "plugin instance secret (e.g. OAuth client secret)",
        "reissue the credential in the plugin provider's developer console",
        json_secrets=JsonSecrets.PLUGIN_INSTANCE, since=R3_2_0,
    ),
    SecretLocation(
        "plugin_user_config", "config", Scheme.API, "plugin per-user secret (e.g. personal API token)",
        "the user reissues the token at the plugin's provider",
        identity=("plugin_id", "user_id"), owner_column="user_id", json_secrets=JsonSecrets.PLUGIN_USER,
        since=R3_3_0,
    ),
)

# Columns known to hold no secret, or a one-way hash: never rotated, never reported.
NOT_SECRETS: frozenset[tuple[str, str]] = frozenset(
    {("users", "password_hash"), ("users", "mfa_backup_codes")}
)

# The newest table or column that exists, as evidence of a release (TREK-FORMAT.md sections 4 and 8).
_EVIDENCE: tuple[tuple[Release, str, str | None], ...] = (
    (R4, "users", "amap_api_key"),
    (R3_3_0, "plugin_user_config", None),
    (R3_3_0, "plugin_oauth_tokens", None),
    (R3_2_0, "plugins", None),
    (R3_2_0, "plugin_settings_fields", None),
    (R3_1_0, "users", "airtrail_api_key"),
)


class Presence(enum.StrEnum):  # a str, so reports show and compare it as its value
    ACTIVE = "active"
    ABSENT = "absent"
    PLAINTEXT_IN_THIS_VERSION = "plaintext in this TREK version"


@dataclass(frozen=True)
class TrekVersion:
    at_least: Release
    evidence: str


@dataclass(frozen=True)
class ResolvedLocation:
    location: SecretLocation
    presence: Presence
    reason: str


Schema = Mapping[str, Iterable[str]]  # table name -> column names


def detect_trek_version(schema: Schema, schema_version: int | None) -> TrekVersion:
    """The newest release implied by the schema_version marker or by the newest table/column present.

    A marker above the newest known 3.x count is read as that 3.x release, never as 4.x:
    forks append migrations of their own.
    """
    by_marker = None
    if schema_version is not None:
        by_marker = max((r for r in MARKED_RELEASES if r.schema_version is not None
                         and r.schema_version <= schema_version), default=None)
    by_table, found = None, ""
    for release, table, column in _EVIDENCE:
        if table in schema and (column is None or column in set(schema[table])):
            by_table, found = release, table + (f".{column}" if column else "")
            break
    marker = f"schema_version {schema_version}" if schema_version is not None else "no schema_version"
    if by_table is not None and (by_marker is None or by_table > by_marker):
        return TrekVersion(by_table, f"TREK {by_table.name} or later ({found} present; {marker})")
    if by_marker is not None:
        return TrekVersion(by_marker, f"TREK {by_marker.name} or later ({marker})")
    older = "older than 3.0.15" if schema_version is not None else "3.0.15 or older"
    return TrekVersion(OLDEST, f"TREK {older} ({marker}, no newer table)")


def resolve_catalogue(schema: Schema, version: TrekVersion) -> list[ResolvedLocation]:
    """Match every catalogued location with the schema actually found."""
    resolved = []
    for location in CATALOGUE:
        columns = set(schema.get(location.table, ()))
        gate = location.encrypted_since
        if location.table not in schema:
            resolved.append(ResolvedLocation(location, Presence.ABSENT, f"no table {location.table}"))
        elif location.column not in columns:
            resolved.append(ResolvedLocation(location, Presence.ABSENT, f"no column {location.table}.{location.column}"))
        elif location.setting_key is not None and location.key_column not in columns:
            resolved.append(ResolvedLocation(location, Presence.ABSENT,
                                             f"no column {location.table}.{location.key_column}"))
        elif gate is not None and version.at_least < gate:
            resolved.append(
                ResolvedLocation(
                    location,
                    Presence.PLAINTEXT_IN_THIS_VERSION,
                    f"TREK before {gate.name} (schema_version {gate.schema_version}) reads this as plaintext; "
                    "left as it is",
                )
            )
        else:
            resolved.append(ResolvedLocation(location, Presence.ACTIVE, ""))
    return resolved
