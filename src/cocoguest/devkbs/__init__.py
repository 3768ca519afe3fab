"""A Trustee-compatible Key Broker Service for development and tests (kbs-protocol.md; issue 10).

Modules, lowest first:
    config          the TOML configuration in Trustee's shape
    lru             the bounded, thread-safe LRU map behind the GET-path caches
    storage         resources on disk (Trustee's LocalFs names), written atomically
    sessions        ``kbs-session-id`` sessions with expiry
    verifier        the ``sample`` and ``sampledevice`` verifiers: report-data binding, init-data digest
    native_policy   the shipped attestation policies evaluated in Python (pinned by SHA-256, regopy's verdicts)
    rego            Rego evaluation on regopy (resource policy ``data.policy.allow``, attestation policies)
    ear             EAR attestation tokens (ES256): appraisal, signing, verification, tee-pubkey lookup
    admin_auth      admin Bearer JWT (Ed25519) check
    service         the KBS: one request in, one response out; no sockets (testable without a server)
    http11          sans-IO HTTP/1.1 request parser (caps, refusals) and response writer
    server          the asyncio HTTP/1.1 (and HTTPS) front end: keep-alive, timeouts, connection cap
    admin_client    the HTTP client of the admin verbs (``cocoguest kbs config ...``)

Invariants:
    * Never imports ``image``, ``registry`` or ``signature``; uses ``kbs`` for protocol constants and JCS, and
      ``crypto`` for every primitive.
    * Every error a client sees is Trustee's ``{"type", "detail"}`` with Trustee's status (401 for almost
      everything, 404 for an unknown path or plugin).
"""
