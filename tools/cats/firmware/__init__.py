"""Layer 7, firmware: the C node build - Zephyr / M4 / host builds, ctypes binding, ELF sizes."""
