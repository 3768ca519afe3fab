"""Rego policies on regopy (the Microsoft rego-cpp engine; Trustee uses regorus): compile once, query often.

Two uses (kbs-protocol.md §11):
    * the resource policy: query ``data.policy.allow`` with ``input`` = the verified token claims and ``data`` =
      ``{"plugin", "resource-path", "query"}``; anything but ``true`` (missing, undefined, non-boolean) denies;
    * attestation policies: query ``data.policy.trust_claims`` (and ``data.policy.extensions``) with ``input`` =
      the annotated evidence and ``data.reference`` = the reference values (Trustee's policies call the builtin
      ``query_reference_value(id)``, which rego-cpp lacks; ours read ``data.reference[id]``).

Invariants:
    * A policy that does not parse is refused when it is set (``ParsePolicyError``), never at first use.
    * rego-cpp interpreters are not thread-safe: each is used under its own lock; up to four per ``data`` are
      reused across queries with the same ``data`` (building one costs milliseconds).
    * Verdict cache (resource policy only): Rego evaluation is a pure function of (policy, input, data) unless
      the policy calls a non-deterministic builtin (``time.*``, ``rand.*``, ``uuid.*``, ``http.send``, ...);
      such policies are never cached. The cache is bounded (``Limits.devkbs_policy_cache_entries``) and dies
      with the policy.
    * A policy whose text is exactly a shipped attestation policy answers its ``trust_claims`` natively
      (:mod:`cocoguest.devkbs.native_policy`, proven equal to regopy); outside the proven domain it asks regopy.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from typing import Final

from regopy import Interpreter, RegoError

from cocoguest.devkbs.lru import BoundedLru
from cocoguest.devkbs.native_policy import Unsupported, native_rules
from cocoguest.errors import KbsApiError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_NON_DETERMINISTIC: Final = re.compile(r"\b(time\.|rand\.|uuid\.|http\.send|opa\.runtime|net\.|trace\()")
_MAX_INTERPRETERS: Final = 64
_POOL: Final = 4
_MODULE: Final = "policy"


def _dump(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


class RegoPolicy:
    """One compiled Rego module (package ``policy``) and its interpreters, by ``data``."""

    def __init__(self, text: str, what: str, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Compile ``text``.

        Raises:
            KbsApiError: the text does not parse (``ParsePolicyError``, names ``what``).
        """
        self.text = text
        self._what = what
        self._cacheable = _NON_DETERMINISTIC.search(text) is None
        self._lock = threading.Lock()
        self._interpreters: OrderedDict[str, list[tuple[Interpreter, threading.Lock]]] = OrderedDict()
        # Values are 1-tuples: an undefined rule's verdict is None, which must still be a hit.
        self._verdicts: BoundedLru[bytes, tuple[object]] = BoundedLru(limits.devkbs_policy_cache_entries)
        self._native = native_rules(text)
        self._build("{}")  # SECURITY: refuse a broken policy now, not at the first request.

    def _build(self, data_json: str) -> Interpreter:
        try:
            interpreter = Interpreter()
            interpreter.add_module(_MODULE, self.text)
            interpreter.add_data_json(data_json)
            interpreter.query("data.policy")  # forces compilation: a parse error surfaces here
        except RegoError as e:
            msg = f"Parse policy error: {self._what}: {str(e)[:300]}"
            raise KbsApiError("ParsePolicyError", msg) from e
        return interpreter

    def _interpreter(self, data_json: str) -> tuple[Interpreter, threading.Lock]:
        """A free interpreter for ``data_json``, its lock HELD (the caller releases it).

        Up to ``_POOL`` interpreters per ``data`` let concurrent queries run in parallel (rego-cpp runs without
        the GIL); beyond that, callers wait for one.
        """
        with self._lock:
            pool = self._interpreters.get(data_json)
            if pool is not None:
                self._interpreters.move_to_end(data_json)
                for entry in pool:
                    if entry[1].acquire(blocking=False):
                        return entry
                grow = len(pool) < _POOL
            else:
                grow = True
        if not grow:
            assert pool is not None  # noqa: S101  (grow is False only for an existing pool)
            entry = pool[0]
            entry[1].acquire()
            return entry
        entry = (self._build(data_json), threading.Lock())
        entry[1].acquire()
        with self._lock:
            self._interpreters.setdefault(data_json, []).append(entry)
            while len(self._interpreters) > _MAX_INTERPRETERS:
                self._interpreters.popitem(last=False)
        return entry

    def query(self, rule: str, input_value: object, data: object, *, input_key: bytes | None = None) -> object:
        """The value of ``data.policy.<rule>`` for ``input_value`` and ``data``; ``None`` when undefined.

        ``input_key``, if given, must identify ``input_value`` exactly (e.g. the SHA-256 of the signed token whose
        verified claims it is); the verdict cache then uses it instead of serializing ``input_value``.

        Raises:
            KbsApiError: the engine failed (``PolicyEngineError``).
        """
        native = self._native.get(rule)
        if native is not None and isinstance(data, dict):
            try:
                return native(input_value, data)
            except Unsupported:
                pass  # outside the domain proven equal to regopy: regopy decides
        data_json = _dump(data)
        input_json: str | None = None
        if input_key is None:
            input_json = _dump(input_value)
            identity = b"j" + input_json.encode("utf-8")
        else:
            identity = b"k" + input_key  # domain-separated from serialized inputs
        key = hashlib.sha256(rule.encode() + b"\0" + data_json.encode() + b"\0" + identity).digest()
        if self._cacheable:
            hit = self._verdicts.get(key)
            if hit is not None:
                return hit[0]
        if input_json is None:
            input_json = _dump(input_value)
        interpreter, lock = self._interpreter(data_json)
        try:
            interpreter.set_input_term(input_json)
            output = interpreter.query(f"data.policy.{rule}")
        except RegoError as e:
            msg = f"Policy engine error: {self._what}: {str(e)[:300]}"
            raise KbsApiError("PolicyEngineError", msg) from e
        finally:
            lock.release()
        if not output.ok():
            msg = f"Policy engine error: {self._what}: {str(output)[:300]}"
            raise KbsApiError("PolicyEngineError", msg)
        value: object = None
        if output.results and output.results[0].expressions:
            value = output.results[0].expressions[0]
        if self._cacheable:
            self._verdicts.put(key, (value,))
        return value

    def allows(self, claims: object, data: object, *, claims_key: bytes | None = None) -> bool:
        """Resource policy: whether ``data.policy.allow`` is exactly ``true`` (``claims_key``: see :meth:`query`)."""
        return self.query("allow", claims, data, input_key=claims_key) is True
