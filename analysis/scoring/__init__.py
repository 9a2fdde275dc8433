"""score: every vocabulary item against each vector, per reference and geometry, without materialising references."""
