"""SQLite and the file system: opening, locks, other processes, backup copies, atomic files. Knows nothing of TREK."""
