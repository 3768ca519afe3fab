"""The confidential data hub core (resources, sealed secrets, KMS plugins, secure mounts, image pull service)."""
