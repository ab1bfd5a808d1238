"""Layer 2, model: the float transformer, its partition over D nodes, message-dropout, pruning."""
