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

from keyrotate.formats import Scheme


class JsonSecrets(enum.Enum):
    """How to find the encrypted fields inside a JSON value."""

    S3_BACKENDS = "s3-backends"  # storage.backends: [i].options.secretAccessKey where [i].type == "s3"
    PLUGIN_INSTANCE = "plugin-instance"  # plugins.config: fields marked secret with scope instance
    PLUGIN_USER = "plugin-user"  # plugin_user_config.config: fields marked secret with scope user


@dataclass(frozen=True)
class SecretLocation:
    table: str
    column: str
    scheme: Scheme
    what: str
    revoke_hint: str
    identity: tuple[str, ...] = ("id",)
    owner_column: str | None = None  # column holding users.id; None for instance-wide secrets
    setting_key: str | None = None  # the `key` value for settings / app_settings rows
    json_secrets: JsonSecrets | None = None
    encrypted_since: int = 3  # first TREK major version that encrypts this location

    @property
    def label(self) -> str:
        base = f"{self.table}.{self.column}"
        if self.setting_key is not None:
            base += f"[{self.setting_key}]"
        if self.json_secrets is JsonSecrets.S3_BACKENDS:
            base += " s3 secretAccessKey"
        elif self.json_secrets is not None:
            base += " secret fields"
        return base

    @property
    def whole_value(self) -> bool:
        return self.json_secrets is None


def _user(column: str, what: str, hint: str, *, scheme: Scheme = Scheme.API, since: int = 3) -> SecretLocation:
    return SecretLocation(
        "users", column, scheme, what, hint, owner_column="id", encrypted_since=since
    )


def _setting(key: str, what: str, hint: str, *, since: int = 3) -> SecretLocation:
    return SecretLocation(
        "settings", "value", Scheme.API, what, hint,
        identity=("user_id", "key"), owner_column="user_id", setting_key=key, encrypted_since=since,
    )


def _app_setting(key: str, what: str, hint: str, *, since: int = 3) -> SecretLocation:
    return SecretLocation(
        "app_settings", "value", Scheme.API, what, hint, identity=("key",), setting_key=key, encrypted_since=since
    )


CATALOGUE: tuple[SecretLocation, ...] = (
    _user("maps_api_key", "Google Maps API key", "Google Cloud console > APIs & Services > Credentials"),
    _user("openweather_api_key", "OpenWeather API key", "openweathermap.org > My API keys"),
    _user("immich_api_key", "Immich API key", "Immich > Account settings > API keys"),
    _user("synology_password", "Synology password", "the Synology DSM account's password"),
    _user("synology_sid", "Synology session id", "sign the user out of Synology Photos (DSM > Security > Account)"),
    _user("synology_did", "Synology device id", "remove the trusted device in DSM > Personal > Security"),
    _user("mfa_secret", "TOTP seed (two-factor authentication)",
          "the user must disable and re-enrol MFA in TREK", scheme=Scheme.MFA),
    _user("unsplash_api_key", "Unsplash access key", "unsplash.com/oauth/applications", since=4),
    _user("amap_api_key", "AMap API key", "console.amap.com > key management", since=4),
    _user("airtrail_api_key", "AirTrail API key", "AirTrail > Settings > API keys", since=4),
    _setting("webhook_url", "personal webhook URL (contains its token)", "regenerate the webhook in the receiving service"),
    _setting("ntfy_token", "ntfy access token", "ntfy server > Account > Access tokens"),
    _setting("mapbox_access_token", "Mapbox access token", "account.mapbox.com > Access tokens"),
    _setting("carto_api_key", "CARTO API key", "CARTO workspace > Developers > Credentials", since=4),
    _setting("llm_api_key", "LLM provider API key", "the LLM provider's API key console", since=4),
    _app_setting("oidc_client_secret", "OIDC client secret", "the identity provider's client settings"),
    _app_setting("smtp_pass", "SMTP password", "the mail provider's account or app password"),
    _app_setting("admin_webhook_url", "admin webhook URL (contains its token)", "regenerate the webhook in the receiving service"),
    _app_setting("admin_ntfy_token", "admin ntfy access token", "ntfy server > Account > Access tokens"),
    _app_setting("maps_api_key", "instance Google Maps API key", "Google Cloud console > APIs & Services > Credentials", since=4),
    _app_setting("unsplash_api_key", "instance Unsplash access key", "unsplash.com/oauth/applications", since=4),
    _app_setting("amap_api_key", "instance AMap API key", "console.amap.com > key management", since=4),
    SecretLocation(
        "app_settings", "value", Scheme.API, "S3 secret access key", "the S3 provider's IAM / access keys page",
        identity=("key",), setting_key="storage.backends", json_secrets=JsonSecrets.S3_BACKENDS, encrypted_since=4,
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
        "plugin_oauth_tokens", "access_token", Scheme.API, "plugin OAuth access token",
        "disconnect and reconnect the plugin; revoke the grant at the provider",
        identity=("plugin_id", "user_id"), owner_column="user_id", encrypted_since=4,
    ),
    SecretLocation(
        "plugin_oauth_tokens", "refresh_token", Scheme.API, "plugin OAuth refresh token",
        "disconnect and reconnect the plugin; revoke the grant at the provider",
        identity=("plugin_id", "user_id"), owner_column="user_id", encrypted_since=4,
    ),
    SecretLocation(
        "plugins", "config", Scheme.API, "plugin instance secret (e.g. OAuth client secret)",
        "reissue the credential in the plugin provider's developer console",
        json_secrets=JsonSecrets.PLUGIN_INSTANCE, encrypted_since=4,
    ),
    SecretLocation(
        "plugin_user_config", "config", Scheme.API, "plugin per-user secret (e.g. personal API token)",
        "the user reissues the token at the plugin's provider",
        identity=("plugin_id", "user_id"), owner_column="user_id", json_secrets=JsonSecrets.PLUGIN_USER,
        encrypted_since=4,
    ),
)

# Columns known to hold no secret, or a one-way hash: never rotated, never reported.
NOT_SECRETS: frozenset[tuple[str, str]] = frozenset(
    {("users", "password_hash"), ("users", "mfa_backup_codes")}
)

# Tables and columns that exist only from TREK 4 on.
_V4_TABLES = ("plugins", "plugin_oauth_tokens", "plugin_user_config", "plugin_settings_fields")
_V4_USER_COLUMNS = ("amap_api_key", "airtrail_api_key")


class Presence(enum.Enum):
    ACTIVE = "active"
    ABSENT = "absent"
    PLAINTEXT_IN_THIS_VERSION = "plaintext in this TREK version"


@dataclass(frozen=True)
class TrekVersion:
    major: int
    evidence: str


@dataclass(frozen=True)
class ResolvedLocation:
    location: SecretLocation
    presence: Presence
    reason: str


Schema = Mapping[str, Iterable[str]]  # table name -> column names


def detect_trek_version(schema: Schema, schema_version: int | None) -> TrekVersion:
    v4_tables = [t for t in _V4_TABLES if t in schema]
    user_columns = set(schema.get("users", ()))
    v4_columns = [c for c in _V4_USER_COLUMNS if c in user_columns]
    if v4_tables or v4_columns:
        found = ", ".join(v4_tables + [f"users.{c}" for c in v4_columns])
        return TrekVersion(4, f"4.x ({found} present)")
    if schema_version is not None:
        return TrekVersion(3, f"3.x (schema_version {schema_version})")
    return TrekVersion(3, "3.x or older (no 4.x tables, no schema_version)")


def resolve_catalogue(schema: Schema, version: TrekVersion) -> list[ResolvedLocation]:
    """Match every catalogued location with the schema actually found."""
    resolved = []
    for location in CATALOGUE:
        columns = set(schema.get(location.table, ()))
        if location.table not in schema:
            resolved.append(ResolvedLocation(location, Presence.ABSENT, f"no table {location.table}"))
        elif location.column not in columns:
            resolved.append(ResolvedLocation(location, Presence.ABSENT, f"no column {location.table}.{location.column}"))
        elif location.setting_key is not None and "key" not in columns:
            resolved.append(ResolvedLocation(location, Presence.ABSENT, f"no column {location.table}.key"))
        elif version.major < location.encrypted_since:
            resolved.append(
                ResolvedLocation(
                    location,
                    Presence.PLAINTEXT_IN_THIS_VERSION,
                    f"TREK {version.major}.x reads this as plaintext; left as it is",
                )
            )
        else:
            resolved.append(ResolvedLocation(location, Presence.ACTIVE, ""))
    return resolved
