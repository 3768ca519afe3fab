"""Bounded key-unwrap work (issue 7, defect 9): wrapped-key entries per layer, attempts per image, short messages."""

from __future__ import annotations

import io

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cocoguest.crypto import jwe
from cocoguest.crypto.keys import PrivateKeyMaterial, PublicKeyMaterial
from cocoguest.digest import Digest
from cocoguest.errors import KeyUnwrapError, ProtocolError
from cocoguest.limits import Limits
from cocoguest.oci import media_types as mt
from cocoguest.oci.descriptor import Descriptor
from cocoguest.ocicrypt import annotations as enc
from cocoguest.ocicrypt.keywrap.jwe import ANNOTATION_KEY, JweUnwrapper, JweWrapper
from cocoguest.ocicrypt.layer import UnwrapBudget, check_authorization, encrypt_layer, unwrap_layer_key

BLOB = b"layer bytes " * 100


@pytest.fixture(scope="module")
def keys() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]:
    return ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key_operations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every private-key operation of the JWE unwrapper (one entry tried with one key)."""
    calls: list[str] = []
    original = jwe._decrypt_with

    def spy(text: str, key: PrivateKeyMaterial) -> bytes | None:
        calls.append(key.source)
        return original(text, key)

    monkeypatch.setattr(jwe, "_decrypt_with", spy)
    return calls


def _layer(right: ec.EllipticCurvePrivateKey, wrong: ec.EllipticCurvePrivateKey, wrong_entries: int) -> Descriptor:
    """An encrypted layer whose jwe annotation has ``wrong_entries`` entries for ``wrong``, then the right one."""
    plain = Descriptor(mt.OCI_LAYER_GZIP, Digest.of_bytes(BLOB), len(BLOB), {})
    desc = encrypt_layer(
        io.BytesIO(BLOB), io.BytesIO(), plain, [JweWrapper([PublicKeyMaterial(right.public_key(), "r")])]
    )
    decoy = enc.b64encode(JweWrapper([PublicKeyMaterial(wrong.public_key(), "w")]).wrap(b"{}"))
    annotations = dict(desc.annotations)
    annotations[ANNOTATION_KEY] = ",".join([decoy] * wrong_entries + [annotations[ANNOTATION_KEY]])
    return desc.with_changes(annotations=annotations)


def _unwrapper(key: ec.EllipticCurvePrivateKey) -> JweUnwrapper:
    return JweUnwrapper([PrivateKeyMaterial(key, "mine.pem")])


def test_fifteen_hundred_entries_in_1_mib_are_refused_before_any_key_is_tried(
    keys: tuple[ec.EllipticCurvePrivateKey, ...], key_operations: list[str]
) -> None:
    right, wrong = keys
    desc = _layer(right, wrong, 1500)
    with pytest.raises(ProtocolError, match=r"1501 wrapped-key entries .* more than the 32 accepted per layer") as e:
        unwrap_layer_key(desc, [_unwrapper(right)])
    assert str(desc.digest) in str(e.value)
    assert len(str(e.value)) < 300
    assert key_operations == []


def test_entries_of_every_scheme_count_toward_the_layer_cap(keys: tuple[ec.EllipticCurvePrivateKey, ...]) -> None:
    right, wrong = keys
    desc = _layer(right, wrong, 0)
    extra = {enc.keys_annotation(f"scheme{i}"): "AAAA,AAAA" for i in range(20)}
    desc = desc.with_changes(annotations={**desc.annotations, **extra})
    with pytest.raises(ProtocolError, match=r"41 wrapped-key entries \(jwe: 1; scheme0: 2; scheme1: 2; and 18 more\)"):
        unwrap_layer_key(desc, [_unwrapper(right)])


def test_entries_under_the_cap_are_all_tried(
    keys: tuple[ec.EllipticCurvePrivateKey, ...], key_operations: list[str]
) -> None:
    right, wrong = keys
    unwrapped = unwrap_layer_key(_layer(right, wrong, 31), [_unwrapper(right)])
    assert len(unwrapped.options.symkey) == 32
    assert len(key_operations) == 32


def test_the_image_budget_is_shared_by_its_layers(
    keys: tuple[ec.EllipticCurvePrivateKey, ...], key_operations: list[str]
) -> None:
    right, wrong = keys
    limits = Limits(max_wrapped_key_attempts_per_image=10)
    layers = [_layer(right, wrong, 3) for _ in range(3)]  # 4 attempts each: the third layer runs out
    with pytest.raises(ProtocolError, match=r"more wrapped keys than the 10 tried per image") as e:
        check_authorization(layers, [_unwrapper(right)], limits=limits)
    assert str(layers[2].digest) in str(e.value)
    assert len(key_operations) == 10


def test_a_budget_is_thread_safe_and_exact() -> None:
    import threading  # noqa: PLC0415

    budget = UnwrapBudget(Limits(max_wrapped_key_attempts_per_image=1000))
    refused: list[int] = []

    def take_many() -> None:
        for _ in range(300):
            try:
                budget.take("layer x")
            except ProtocolError:
                refused.append(1)

    threads = [threading.Thread(target=take_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refused) == 4 * 300 - 1000


def test_no_key_fits_message_lists_a_few_failures_and_counts_the_rest(
    keys: tuple[ec.EllipticCurvePrivateKey, ...],
) -> None:
    right, wrong = keys
    desc = _layer(right, right, 30)  # all 31 entries are for `right`; we hold only `wrong`
    with pytest.raises(KeyUnwrapError, match="none of the given keys can unwrap") as e:
        unwrap_layer_key(desc, [_unwrapper(wrong)])
    assert "and 28 more" in str(e.value)
    assert len(str(e.value)) < 2000
