"""The rotation pipeline: plan the locations, scan them in batches, re-encrypt, commit, prove."""
