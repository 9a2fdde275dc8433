"""corpus: many texts at once: reading them, the counting engine, spike shares, the verdict, time estimates."""
