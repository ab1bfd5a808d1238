"""Layer 9, commands: the `cats` CLI subcommands and west commands (thin wrappers)."""
