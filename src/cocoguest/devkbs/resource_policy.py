"""The KBS resource policy's ``data`` document, built as Trustee's KBS builds it (kbs-protocol.md §11.1).

Trustee (kbs/src/api_server.rs, ``api``) splits the request path after ``/kbs/v0/`` on ``/``: the first segment is
the plugin, every later segment (empty ones included) is ``resource-path``; the query string is decoded as
``application/x-www-form-urlencoded`` into a string map (``a=`` and a bare ``a`` give ``""``, a repeated name keeps
its last value). The policy is evaluated on these raw segments BEFORE the plugin checks the path, so a request
for a malformed path that the policy denies is ``PolicyDeny``, as in Trustee.

Invariants:
    * Pure: no IO; the result is JSON (strings, lists, objects only).
    * SECURITY: the document describes an untrusted request; the policy may read it, nothing here validates it.
      File-system safety is the storage layer's job (:func:`cocoguest.devkbs.storage.parse_resource_path`).
"""

from __future__ import annotations

from urllib.parse import parse_qsl


def policy_data(untrusted_path: str, query: str) -> dict[str, object]:
    """``{"plugin", "resource-path", "query"}`` for ``/kbs/v0/<untrusted_path>?<query>``.

    ``untrusted_path`` is the path after ``/kbs/v0/`` (e.g. ``resource/default/key/k1``).
    """
    plugin, *resource_path = untrusted_path.split("/")
    # keep_blank_values: serde_urlencoded gives "a=" and "a" the value "" (Python would drop them).
    return {"plugin": plugin, "resource-path": resource_path, "query": dict(parse_qsl(query, keep_blank_values=True))}
