"""KMS plugins behind one interface (guest-components.md §8.4): ``kbs``, ``local`` (development), ``aws``."""
