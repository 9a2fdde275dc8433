"""output: files: the CLI's exports, resumable sweeps (local or on Ray)."""
