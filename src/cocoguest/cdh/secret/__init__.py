"""Sealed secrets (guest-components.md §8.3): the ``sealed.`` envelope, vault and envelope payloads, sealing."""
