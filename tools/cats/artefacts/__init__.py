"""Layer 5, artefacts: what a node is flashed with - export / manifests and SomeGather frames."""
