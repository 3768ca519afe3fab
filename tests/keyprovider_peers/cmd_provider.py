#!/usr/bin/env python3
"""A test key provider: wraps private options with AES-256-GCM under a 32-byte key read from a file.

Run as ``cmd_provider.py --name NAME [--key-file PATH] [--format go|array] [--fault F] [--record FILE]``; the
request JSON
arrives on stdin and the answer goes to stdout (ocicrypt.md §5.5).

* The key file is ``keyfile=<path>`` from the provider's own parameter, else ``--key-file``.
* ``--format go`` answers as Go ocicrypt would (base64, both result objects); ``array`` answers like CoCo's
  Rust coco_keyprovider (JSON arrays of byte values, one result object).
* The request is checked strictly against the Go form: every member present, base64 strings.
* ``--fault``: ``exit1`` (stderr + status 1), ``badjson``, ``empty`` (empty result), ``sleep``, ``huge``.
* The annotation is CoCo-like JSON: ``{"kid", "wrapped_data", "iv", "wrap_type": "A256GCM"}``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

AAD = b"cocoguest-test-keyprovider"


class PeerError(Exception):
    """The request cannot be served."""


def _b64d(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise PeerError(f"{what}: expected a base64 string, got {type(value).__name__}")
    return base64.b64decode(value, validate=True)


def _key(parameters: dict[str, list[str]], name: str, default: str | None) -> tuple[str, bytes]:
    values = parameters.get(name) or []
    params = _b64d(values[0], f"Parameters[{name}]").decode() if values else ""
    path = params.removeprefix("keyfile=") if params.startswith("keyfile=") else default
    if not path:
        raise PeerError("no key file: give provider:NAME:keyfile=PATH or --key-file")
    return Path(path).name, Path(path).read_bytes()


def _bytes_out(data: bytes, fmt: str) -> object:
    return list(data) if fmt == "array" else base64.b64encode(data).decode()


def handle(request: bytes, name: str, fmt: str = "go", key_file: str | None = None) -> bytes:
    """Serve one request; return the answer JSON. Raises PeerError if it cannot."""
    obj = json.loads(request)
    if set(obj) != {"op", "keywrapparams", "keyunwrapparams"}:
        raise PeerError(f"unexpected top-level members {sorted(obj)}")
    wrap, unwrap = obj["keywrapparams"], obj["keyunwrapparams"]
    if set(wrap) != {"ec", "optsdata"} or set(unwrap) != {"dc", "annotation"}:
        raise PeerError("params objects must have ec/optsdata and dc/annotation")
    if obj["op"] == "keywrap":
        if unwrap != {"dc": None, "annotation": None}:
            raise PeerError("keywrap request with keyunwrapparams set")
        kid, key = _key(wrap["ec"]["Parameters"], name, key_file)
        nonce = os.urandom(12)
        wrapped = AESGCM(key).encrypt(nonce, _b64d(wrap["optsdata"], "optsdata"), AAD)
        annotation = json.dumps(
            {
                "kid": kid,
                "wrapped_data": base64.b64encode(wrapped).decode(),
                "iv": base64.b64encode(nonce).decode(),
                "wrap_type": "A256GCM",
            }
        ).encode()
        result = {"keywrapresults": {"annotation": _bytes_out(annotation, fmt)}}
        if fmt == "go":
            result["keyunwrapresults"] = {"optsdata": None}
        return json.dumps(result).encode()
    if obj["op"] == "keyunwrap":
        if wrap != {"ec": None, "optsdata": None}:
            raise PeerError("keyunwrap request with keywrapparams set")
        _, key = _key(unwrap["dc"]["Parameters"], name, key_file)
        packet = json.loads(_b64d(unwrap["annotation"], "annotation"))
        try:
            optsdata = AESGCM(key).decrypt(
                base64.b64decode(packet["iv"]), base64.b64decode(packet["wrapped_data"]), AAD
            )
        except InvalidTag as e:
            raise PeerError("unwrap failed: wrong key or tampered annotation") from e
        result = {"keyunwrapresults": {"optsdata": _bytes_out(optsdata, fmt)}}
        if fmt == "go":
            result = {"keywrapresults": {"annotation": None}, **result}
        return json.dumps(result).encode()
    raise PeerError(f"unknown op {obj['op']!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--key-file")
    parser.add_argument("--format", choices=["go", "array"], default="go")
    parser.add_argument("--fault", choices=["exit1", "badjson", "empty", "sleep", "huge"])
    parser.add_argument("--record")
    args = parser.parse_args()
    if args.fault == "sleep":
        time.sleep(30)
    request = sys.stdin.buffer.read()
    if args.record:
        Path(args.record).write_bytes(request)
    if args.fault == "exit1":
        sys.stderr.write("provider diagnostics\nrefusing: test fault exit1\n")
        return 1
    if args.fault == "badjson":
        sys.stdout.write("this is not json")
        return 0
    if args.fault == "empty":
        sys.stdout.write('{"keywrapresults":{"annotation":""},"keyunwrapresults":{"optsdata":null}}')
        return 0
    if args.fault == "huge":
        sys.stdout.write('{"keywrapresults":{"annotation":"' + "A" * 100_000 + '"}}')
        return 0
    try:
        answer = handle(request, args.name, args.format, args.key_file)
    except (PeerError, KeyError, TypeError, ValueError) as e:
        sys.stderr.write(f"cmd_provider: {e}\n")
        return 1
    sys.stdout.buffer.write(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
