"""Layer 3, training: data sets, the training loop, evaluation and checkpoints."""
