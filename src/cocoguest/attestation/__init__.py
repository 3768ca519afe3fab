"""Attestation: the Attester protocol, TEE detection, attester drivers, the AA event log and init-data.

Boundaries: never imports ``image``, ``registry``, ``signature``, ``rpc`` or ``cli``; hashing uses hashlib,
anything else cryptographic goes through ``cocoguest.crypto``. Drivers take every device path as a constructor
parameter (default: the real kernel path), so tests drive the same code against synthetic device trees.
"""
