"""Layer 8, sim: the simulated swarm - radio medium, loss, C node processes, replay, latency."""
