"""Layer 1, wire: the bytes on the air and on the line - protobuf messages, stream, radio PHYs."""
