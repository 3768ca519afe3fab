"""The confidential data hub core (guest-components.md §8): resources, sealed secrets, KMS plugins, image pulls.

Domain code only: no RPC or CLI imports; the services in :mod:`cocoguest.rpc.services.cdh` adapt it.
"""
