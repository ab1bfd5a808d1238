"""CATS: one transformer run by a swarm of microcontrollers (partition, train, export, simulate)."""

__version__ = "0.1.0"
