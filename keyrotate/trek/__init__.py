"""The facts about TREK: its ciphertext schemes, where it keeps secrets, how it finds its key, its schema."""
