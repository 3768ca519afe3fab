"""Well-known OCI annotation keys."""

from __future__ import annotations

from typing import Final

REF_NAME: Final = "org.opencontainers.image.ref.name"
