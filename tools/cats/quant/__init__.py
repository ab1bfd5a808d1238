"""Layer 4, quant: the int8 model - the bit-exact integer reference (qref) and int8 evaluation."""
