"""Attester drivers, one module per TEE; every device path is a constructor parameter (default: the real one)."""
