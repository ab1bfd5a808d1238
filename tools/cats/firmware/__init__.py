"""Layer 7, firmware: the C node build - ctypes binding to the host core, ELF image sizes."""
