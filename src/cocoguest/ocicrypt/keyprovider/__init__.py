"""ocicrypt key providers: external programs or services that wrap and unwrap layer keys (ocicrypt.md §5.5).

* :mod:`.config` parses the ``OCICRYPT_KEYPROVIDER_CONFIG`` JSON file into :class:`KeyProviderEntry` values.
* :mod:`.protocol` builds and parses the protocol JSON and defines the :class:`KeyProviderTransport` Protocol.
* :mod:`.cmd` is the ``cmd`` transport (exec a program, JSON on stdin/stdout).

The gRPC transport lives in :mod:`cocoguest.rpc.keyprovider_client` (``rpc`` sits above ``ocicrypt``); the
CLI injects transports, so nothing here imports ``cocoguest.rpc``. The key wrapper and unwrapper are in
:mod:`cocoguest.ocicrypt.keywrap.keyprovider`.
"""
