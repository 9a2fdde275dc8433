"""fitted: lenses fitted to the model, one affine map per layer (the linear shortcut, the tuned lens)."""
