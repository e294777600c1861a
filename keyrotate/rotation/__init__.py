"""The rotation pipeline: plan the targets, scan them in batches, re-encrypt, decide, commit, prove.

A ``rotate``, module by module in the order they run (``verify``, ``exposure`` and ``audit`` drive the same scan
through a read-only session):

- ``options``: what the run is asked to do; ``preflight`` refuses what cannot work before anything is opened.
- ``engine``: the steps below, from the write lock to the report (``workers`` starts the crypto pool first).
- ``session`` opens, inspects and integrity-checks the database; ``targets`` crosses the catalogue with its schema.
- ``scanning``: the one scan. ``reading`` reads and writes rowid batches; ``feeding`` hands whole values to the
  ``workers`` (each a ``crypto_worker`` process running the hot path, ``batches``); ``values`` and ``json_values``
  handle JSON and free text; ``discovery`` runs the whole-table searches on a connection of its own;
  ``unrewritable`` lists tokens no UPDATE can reach.
- ``tallies`` count per location, ``stored`` (with ``text_digest``) digests the texts left on disk, ``failures``
  names the values that opened under no key.
- ``plan``: the decision, commit or refuse; ``revoke`` deletes plaintext tokens in the same transaction.
- ``after_commit``: VACUUM, emptied -wal, the proof on a fresh connection; then ``key_file`` gives TREK the new
  key (``old_key`` saves the old one and generates new ones); ``operator_steps`` words what is left to do.
- ``outcome`` turns the tallies into ``report``'s frozen reports; ``verify`` is the read-only scan's entry point.
"""
