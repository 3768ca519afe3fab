"""Key settings the CLI gathers for copy and pull: key providers, PKCS#11 module policy, GnuPG home."""

from __future__ import annotations

import os
from collections.abc import Mapping

from cocoguest.limits import Limits
from cocoguest.ocicrypt import keyspecs
from cocoguest.ocicrypt.keyprovider.config import KeyProviderEntry, load_keyprovider_config
from cocoguest.ocicrypt.keyprovider.protocol import KeyProviderTransport
from cocoguest.ocicrypt.pkcs11_config import default_pkcs11_config_paths, load_pkcs11_module_config


def key_context(env: Mapping[str, str], keyprovider_config: str | None, limits: Limits) -> keyspecs.KeyContext:
    """Gather key-related settings from the environment and flags; the keys obey the command's ``limits``."""
    providers: dict[str, KeyProviderEntry] = {}
    provider_file = keyprovider_config or env.get("OCICRYPT_KEYPROVIDER_CONFIG")
    factory = None
    if provider_file:
        providers = load_keyprovider_config(provider_file, limits=limits)
        from cocoguest.rpc.keyprovider_client import transport_for  # noqa: PLC0415  (grpc is heavy)

        def factory(entry: KeyProviderEntry) -> KeyProviderTransport:
            return transport_for(entry, limits)

    pkcs11_config = None
    for path in default_pkcs11_config_paths(env):
        if os.path.isfile(path):
            pkcs11_config = load_pkcs11_module_config(path, limits=limits)
            break
    return keyspecs.KeyContext(
        gnupg_home=env.get("GNUPGHOME"),
        oaep_hash=env.get("OCICRYPT_OAEP_HASHALG"),
        pkcs11_config=pkcs11_config,
        key_providers=providers,
        transport_factory=factory,
        limits=limits,
    )
