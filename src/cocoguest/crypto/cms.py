"""CMS EnvelopedData with AES-GCM content and RSA PKCS#1 v1.5 key transport, as ocicrypt uses it (§5.2).

The writer reproduces Go ocicrypt's bytes: ContentInfo(EnvelopedData v0), one KeyTransRecipientInfo v0
per certificate (IssuerAndSerialNumber copied raw from the certificate, ``rsaEncryption`` without NULL
parameters), AES-128-GCM content whose parameters use the pkcs7-library quirk (tag ``0x10`` primitive,
contents ``SEQUENCE { [4] IMPLICIT nonce, INTEGER 16 }``) and the primitive ``[0]`` content form.

The reader is lenient where Go's writers differ: GCM parameters tagged ``0x10`` (quirk) or ``0x30``
(RFC 5084), nonce tagged ``0x84`` or ``0x04``, content primitive ``80`` or constructed ``A0 { 04 ... }``,
AES-128/192/256-GCM. It also reads AuthEnvelopedData (RFC 5083), which ``openssl cms -aes-128-gcm`` writes.

Invariants:
    * Parsing never decrypts; :func:`decrypt` releases content only after the GCM tag verified.
    * # SECURITY: PKCS#1 v1.5 is a padding-oracle risk. A padding failure, a CEK of the wrong length and a
      GCM tag failure are indistinguishable to callers (one :class:`DecryptionIntegrityError`), and
      OpenSSL's implicit rejection returns random bytes rather than a padding error.
    * Every structural defect is a :class:`ProtocolError` whose message starts with "malformed PKCS7".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.crypto import der
from cocoguest.crypto.keys import Certificate, RSAPrivateKey, RSAPublicKey, certificate_public_key
from cocoguest.errors import ConfigError, DecryptionIntegrityError, ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits

OID_DATA: Final = "1.2.840.113549.1.7.1"
OID_ENVELOPED_DATA: Final = "1.2.840.113549.1.7.3"
OID_AUTH_ENVELOPED_DATA: Final = "1.2.840.113549.1.9.16.1.23"
OID_RSA_ENCRYPTION: Final = "1.2.840.113549.1.1.1"
OID_AES128_GCM: Final = "2.16.840.1.101.3.4.1.6"
_GCM_KEY_BYTES: Final = {OID_AES128_GCM: 16, "2.16.840.1.101.3.4.1.26": 24, "2.16.840.1.101.3.4.1.46": 32}

CEK_BYTES: Final = 16
"""AES-128-GCM, as Go ocicrypt selects."""
GCM_NONCE_BYTES: Final = 12
GCM_TAG_BYTES: Final = 16

_QUIRK_PARAMS_TAG: Final = 0x10  # SEQUENCE's number without the constructed bit (ocicrypt.md §5.2)
_NONCE_QUIRK_TAG: Final = der.context_tag(4, constructed=False)  # 0x84
_CONTENT_PRIMITIVE: Final = der.context_tag(0, constructed=False)  # 0x80
_CONTENT_CONSTRUCTED: Final = der.context_tag(0, constructed=True)  # 0xA0
_SKI_RID: Final = der.context_tag(0, constructed=False)  # subjectKeyIdentifier [0]


@dataclass(frozen=True, slots=True)
class IssuerSerial:
    """An IssuerAndSerialNumber: the raw DER of the issuer Name and the serial number."""

    issuer: bytes
    serial: int


@dataclass(frozen=True, slots=True)
class Recipient:
    """A recipient to encrypt to: its RSA key and the raw IssuerAndSerialNumber element TLVs."""

    public_key: RSAPublicKey
    issuer_and_serial_der: bytes
    """Issuer Name TLV followed by serial INTEGER TLV, exactly as in the certificate."""


@dataclass(frozen=True, slots=True)
class KeyTransRecipient:
    """A KeyTransRecipientInfo with RSA PKCS#1 v1.5 key transport. ``rid`` is None for a key identifier."""

    rid: IssuerSerial | None
    encrypted_key: bytes


@dataclass(frozen=True, slots=True)
class EnvelopedData:
    """The parts of a parsed (Auth)EnvelopedData needed to decrypt it; nothing is verified yet."""

    recipients: tuple[KeyTransRecipient, ...]
    """Only the RSA KeyTransRecipientInfos; other recipient kinds are skipped."""
    cek_bytes: int
    nonce: bytes
    encrypted_content: bytes
    """Ciphertext followed by the 16-byte GCM tag."""
    aad: bytes


def _certificate_fields(cert: Certificate, source: str) -> tuple[der.Tlv, der.Tlv]:
    """The serialNumber and issuer TLVs of a certificate, as raw DER (Go uses ``RawIssuer``)."""
    try:
        tbs = der.decode(cert.public_bytes(serialization.Encoding.DER)).children()[0].children()
        if tbs and tbs[0].tag == der.context_tag(0, constructed=True):  # [0] EXPLICIT version
            tbs = tbs[1:]
        if len(tbs) < 3:
            msg = "DER: truncated TBSCertificate"
            raise ProtocolError(msg)
        return tbs[0].expect(der.INTEGER, "serialNumber"), tbs[2].expect(der.SEQUENCE, "issuer")
    except (ProtocolError, IndexError) as e:
        msg = f"{source}: cannot read the certificate's issuer and serial number"
        raise ConfigError(msg) from e


def issuer_serial(cert: Certificate, source: str) -> IssuerSerial:
    """The IssuerAndSerialNumber that names ``cert`` in a RecipientInfo.

    Raises:
        ConfigError: the certificate's DER cannot be walked (names ``source``).
    """
    serial, issuer = _certificate_fields(cert, source)
    return IssuerSerial(issuer.encoded, serial.as_int())


def recipient_from_certificate(cert: Certificate, source: str) -> Recipient:
    """A :class:`Recipient` for an X.509 certificate.

    Raises:
        ConfigError: the certificate does not carry an RSA key, or its DER cannot be walked.
    """
    public_key = certificate_public_key(cert, source)
    serial, issuer = _certificate_fields(cert, source)
    return Recipient(public_key, issuer.encoded + serial.encoded)


def _gcm_parameters(nonce: bytes, *, rfc5084: bool) -> bytes:
    if rfc5084:
        return der.sequence(der.octet_string(nonce), der.integer(GCM_TAG_BYTES))
    # ocicrypt.md §5.2 quirk 1: Go's pkcs7 decoder requires exactly this (tag 0x10, nonce tag 0x84).
    inner = der.sequence(der.encode(_NONCE_QUIRK_TAG, nonce), der.integer(GCM_TAG_BYTES))
    return der.encode(_QUIRK_PARAMS_TAG, inner)


def build_enveloped_data(
    content: bytes,
    recipients: Sequence[Recipient],
    *,
    constructed_content: bool = False,
    rfc5084_params: bool = False,
) -> bytes:
    """Encrypt ``content`` to every recipient; DER ContentInfo(EnvelopedData).

    Args:
        content: the plaintext (ocicrypt's private options JSON).
        recipients: at least one recipient; one KeyTransRecipientInfo each.
        constructed_content: write the ``A0 { 04 ... }`` content form of ocicrypt <= 1.2.0 instead of ``80``.
        rfc5084_params: write standard GCM parameters, which Go rejects (tests and other peers only).

    Raises:
        ValueError: no recipients.
    """
    if not recipients:
        msg = "PKCS7 needs at least one recipient"
        raise ValueError(msg)
    cek = os.urandom(CEK_BYTES)
    nonce = os.urandom(GCM_NONCE_BYTES)
    sealed = AESGCM(cek).encrypt(nonce, content, None)
    infos = [
        der.sequence(
            der.integer(0),
            der.encode(der.SEQUENCE, r.issuer_and_serial_der),
            der.sequence(der.oid(OID_RSA_ENCRYPTION)),  # Go writes no NULL parameters
            der.octet_string(r.public_key.encrypt(cek, padding.PKCS1v15())),
        )
        for r in recipients
    ]
    if constructed_content:
        encrypted = der.encode(_CONTENT_CONSTRUCTED, der.octet_string(sealed))
    else:
        encrypted = der.encode(_CONTENT_PRIMITIVE, sealed)
    content_info = der.sequence(
        der.oid(OID_DATA),
        der.sequence(der.oid(OID_AES128_GCM), _gcm_parameters(nonce, rfc5084=rfc5084_params)),
        encrypted,
    )
    enveloped = der.sequence(der.integer(0), der.set_of(*infos), content_info)
    return der.sequence(der.oid(OID_ENVELOPED_DATA), der.encode(der.context_tag(0, constructed=True), enveloped))


# ---------------------------------------------------------------------------------------------- reader


def _malformed(what: str) -> ProtocolError:
    return ProtocolError(f"malformed PKCS7: {what}")


def _parse_recipient(info: der.Tlv) -> KeyTransRecipient | None:
    if info.tag != der.SEQUENCE:
        return None  # KeyAgree/KEK/password/other RecipientInfo: not ours
    fields = info.children()
    if len(fields) != 4:
        raise _malformed("KeyTransRecipientInfo must have 4 fields")
    rid_tlv, algorithm, encrypted_key = (
        fields[1],
        fields[2].expect(der.SEQUENCE, "keyEncryptionAlgorithm"),
        fields[3],
    )
    algorithm_fields = algorithm.children()
    if not algorithm_fields or algorithm_fields[0].expect(der.OID, "algorithm").as_oid() != OID_RSA_ENCRYPTION:
        return None  # RSA-OAEP or something else: ocicrypt never writes it
    rid: IssuerSerial | None = None
    if rid_tlv.tag == der.SEQUENCE:
        parts = rid_tlv.children()
        if len(parts) != 2:
            raise _malformed("IssuerAndSerialNumber must have 2 fields")
        rid = IssuerSerial(
            parts[0].expect(der.SEQUENCE, "issuer").encoded, parts[1].expect(der.INTEGER, "serial").as_int()
        )
    elif rid_tlv.tag != _SKI_RID:
        raise _malformed(f"unknown RecipientIdentifier tag {rid_tlv.tag:#04x}")
    return KeyTransRecipient(rid, encrypted_key.expect(der.OCTET_STRING, "encryptedKey").contents)


def _parse_gcm_parameters(params: der.Tlv) -> bytes:
    if params.tag == _QUIRK_PARAMS_TAG:
        # Quirk 1: the contents of the 0x10 TLV are one complete SEQUENCE.
        inner = params.children()
        if len(inner) != 1:
            raise _malformed("quirk GCM parameters must hold one SEQUENCE")
        params = inner[0]
    fields = params.expect(der.SEQUENCE, "GCMParameters").children()
    if not fields or fields[0].tag not in (_NONCE_QUIRK_TAG, der.OCTET_STRING):
        raise _malformed("GCMParameters has no nonce")
    icv_len = fields[1].expect(der.INTEGER, "aes-ICVlen").as_int() if len(fields) > 1 else 12
    if len(fields) > 2 or icv_len != GCM_TAG_BYTES:
        raise _malformed(f"unsupported GCM ICV length {icv_len}")
    nonce = fields[0].contents
    if len(nonce) != GCM_NONCE_BYTES:
        raise _malformed(f"GCM nonce of {len(nonce)} bytes")
    return nonce


def _parse_content(tlv: der.Tlv) -> bytes:
    if tlv.tag == _CONTENT_PRIMITIVE:
        return tlv.contents
    if tlv.tag == _CONTENT_CONSTRUCTED:
        # BER constructed OCTET STRING: the concatenation of its segments.
        return b"".join(part.expect(der.OCTET_STRING, "content segment").contents for part in tlv.children())
    raise _malformed(f"unexpected encryptedContent tag {tlv.tag:#04x}")


def _parse(untrusted_der: bytes, limits: Limits) -> EnvelopedData:
    outer = der.decode(untrusted_der, limits=limits).expect(der.SEQUENCE, "ContentInfo").children()
    if len(outer) != 2:
        raise _malformed("ContentInfo must have 2 fields")
    content_type = outer[0].expect(der.OID, "contentType").as_oid()
    if content_type not in (OID_ENVELOPED_DATA, OID_AUTH_ENVELOPED_DATA):
        raise _malformed(f"content type {content_type} is not (Auth)EnvelopedData")
    authenticated = content_type == OID_AUTH_ENVELOPED_DATA
    body = outer[1].expect(der.context_tag(0, constructed=True), "content").children()
    if len(body) != 1:
        raise _malformed("[0] content must hold one value")
    fields = body[0].expect(der.SEQUENCE, "EnvelopedData").children()
    fields = [f for f in fields if f.tag != der.context_tag(0, constructed=True)]  # originatorInfo
    if len(fields) < 3:
        raise _malformed("EnvelopedData has too few fields")
    infos = fields[1].expect(der.SET, "recipientInfos").children()
    if len(infos) > limits.max_key_recipients:
        # SECURITY: each RecipientInfo may cost a private-key operation per key; cap the work.
        raise _malformed(f"more than {limits.max_key_recipients} RecipientInfos (max_key_recipients)")
    recipients = tuple(r for r in (_parse_recipient(i) for i in infos) if r is not None)
    eci = fields[2].expect(der.SEQUENCE, "EncryptedContentInfo").children()
    if len(eci) != 3:
        raise _malformed("EncryptedContentInfo has no encrypted content")
    algorithm = eci[1].expect(der.SEQUENCE, "contentEncryptionAlgorithm").children()
    if len(algorithm) != 2:
        raise _malformed("contentEncryptionAlgorithm needs GCM parameters")
    algorithm_oid = algorithm[0].expect(der.OID, "algorithm").as_oid()
    if algorithm_oid not in _GCM_KEY_BYTES:
        raise _malformed(f"content encryption {algorithm_oid} is not AES-GCM")
    nonce = _parse_gcm_parameters(algorithm[1])
    encrypted_content = _parse_content(eci[2])
    aad = b""
    if authenticated:
        # RFC 5083: [1] authAttrs (AAD is their DER with a SET tag), then mac = the GCM tag.
        rest = fields[3:]
        if rest and rest[0].tag == der.context_tag(1, constructed=True):
            aad = der.encode(der.SET, rest[0].contents)
            rest = rest[1:]
        if not rest:
            raise _malformed("AuthEnvelopedData has no mac")
        encrypted_content += rest[0].expect(der.OCTET_STRING, "mac").contents
    if len(encrypted_content) < GCM_TAG_BYTES:
        raise _malformed("encrypted content shorter than a GCM tag")
    return EnvelopedData(recipients, _GCM_KEY_BYTES[algorithm_oid], nonce, encrypted_content, aad)


def parse_enveloped_data(untrusted_der: bytes, *, limits: Limits = DEFAULT_LIMITS) -> EnvelopedData:
    """Parse a DER ContentInfo holding EnvelopedData (or AuthEnvelopedData) with AES-GCM content.

    ``limits`` caps the DER nesting and length octets and the RecipientInfos (``max_key_recipients``).

    Raises:
        ProtocolError: the bytes are not such a structure ("malformed PKCS7: ...").
    """
    try:
        return _parse(untrusted_der, limits)
    except ProtocolError as e:
        if str(e).startswith("malformed PKCS7"):
            raise
        msg = "malformed PKCS7: bad DER"
        raise ProtocolError(msg) from e


def decrypt(envelope: EnvelopedData, private_key: RSAPrivateKey, prefer: IssuerSerial | None = None) -> bytes:
    """Recover the content with one RSA private key, trying every RecipientInfo (``prefer`` first).

    Raises:
        DecryptionIntegrityError: the key opens no RecipientInfo, or the content fails its GCM tag.
    """
    recipients = sorted(envelope.recipients, key=lambda r: prefer is None or r.rid != prefer)
    for recipient in recipients:
        try:
            cek = private_key.decrypt(recipient.encrypted_key, padding.PKCS1v15())
        except ValueError:
            continue  # wrong key size or (without implicit rejection) bad padding
        # SECURITY: a wrong key yields random bytes; the CEK length and then the GCM tag reject it.
        if len(cek) != envelope.cek_bytes:
            continue
        try:
            return AESGCM(cek).decrypt(envelope.nonce, envelope.encrypted_content, envelope.aad or None)
        except InvalidTag:
            continue
    msg = "PKCS7: the key opens no RecipientInfo, or the content failed its GCM tag"
    raise DecryptionIntegrityError(msg)
