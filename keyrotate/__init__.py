"""keyrotate: rotate the at-rest ENCRYPTION_KEY of a TREK database."""

__version__ = "0.1.0"
