"""load: resolve a model name, load it safely, find its parts by its family's table, say what it offers."""
