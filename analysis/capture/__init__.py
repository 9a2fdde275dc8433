"""capture: tokenise, run the model once, read vectors where the model computes them (hooks on its own modules)."""
