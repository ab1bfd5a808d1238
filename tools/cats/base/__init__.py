"""Layer 0, base: repository locations and process settings that every layer may use."""
