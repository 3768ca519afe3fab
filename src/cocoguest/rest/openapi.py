"""The OpenAPI document of api-server-rest, shipped in the package (``openapi.json``) and served as is.

Invariant: the document is read from the installed package, never from the working directory.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def openapi_document() -> bytes:
    """The bytes of ``openapi.json`` (read once)."""
    return resources.files("cocoguest.rest").joinpath("openapi.json").read_bytes()
