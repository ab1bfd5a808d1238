"""Layer 6, analysis: the resource model - flash, RAM and airtime of a partition per node."""
