"""Tests of the PGP key wrapper (ocicrypt.md §5.3, §7): gpg round trips, packet format, lookup, refusals.

gpg keys are generated once per module in a scratch GNUPGHOME; sequoia-made keys (which advertise
SEIPDv2) cover the refusals that need no gpg.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pysequoia
import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from pysequoia.packet import PacketPile, Tag

from cocoguest.errors import ConfigError, KeyUnwrapError, UnsupportedError
from cocoguest.limits import Limits
from cocoguest.ocicrypt.keywrap import KeyUnwrapper, KeyWrapper, pgp
from cocoguest.ocicrypt.keywrap.pgp import (
    PgpPublicKey,
    PgpSecretKey,
    PgpUnwrapper,
    PgpWrapper,
    export_gnupg_public_keyring,
    find_recipients,
    load_public_keys,
    load_secret_keys,
)

ANNOTATION = "org.opencontainers.image.enc.keys.pgp"
OPTIONS = b'{"symkey":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=","digest":"","cipheroptions":{}}'
PASSWORD = "s3cret pass"


# --- gpg fixtures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpg:
    """A scratch GNUPGHOME with three keys and their exports."""

    home: Path
    out: Path
    fingerprints: dict[str, str]  # e-mail -> primary fingerprint
    subkeys: dict[str, list[str]]  # e-mail -> encryption subkey fingerprints, oldest first

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}

    def run(self, *args: str, stdin: bytes = b"", check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            ["gpg", "--batch", "--pinentry-mode", "loopback", *args],
            input=stdin,
            env=self.env(),
            capture_output=True,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done

    def file(self, name: str, data: bytes) -> Path:
        path = self.out / name
        path.write_bytes(data)
        return path

    def encrypt(self, *recipients: str, data: bytes = OPTIONS) -> bytes:
        args = [a for r in recipients for a in ("-r", r)]
        return self.run("--trust-model", "always", "--encrypt", *args, stdin=data).stdout

    def decrypt(self, message: bytes) -> subprocess.CompletedProcess[bytes]:
        return self.run("--verbose", "--decrypt", stdin=message, check=False)

    def list_packets(self, message: bytes) -> str:
        return self.run("--list-packets", stdin=message, check=False).stdout.decode(errors="replace")


def _gen(gpg: Gpg, uid: str, algo: str, subalgo: str, passphrase: str = "") -> tuple[str, str]:
    gpg.run("--passphrase", passphrase, "--quick-gen-key", uid, algo, "default", "never")
    email = uid.split("<")[1].rstrip(">")
    listing = gpg.run("--with-colons", "--list-keys", email).stdout.decode()
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    gpg.run("--passphrase", passphrase, "--quick-add-key", fpr, subalgo, "encr", "never")
    return email, fpr


def _encryption_subkeys(gpg: Gpg, email: str) -> list[str]:
    listing = gpg.run("--with-colons", "--with-subkey-fingerprints", "--list-keys", email).stdout.decode()
    lines = listing.splitlines()
    return [lines[i + 1].split(":")[9] for i, line in enumerate(lines) if line.startswith("sub:")]


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpg]:
    if shutil.which("gpg") is None or shutil.which("gpgconf") is None:
        pytest.skip("gpg is not installed")
    base = tmp_path_factory.mktemp("pgp")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    out = base / "out"
    out.mkdir()
    g = Gpg(home, out, {}, {})
    try:
        for uid, algo, sub, pw in (
            ("Test User <test@example.com>", "rsa2048", "rsa2048", ""),
            ("Ed User <ed@example.com>", "ed25519", "cv25519", ""),
            ("Pw User <pw@example.com>", "ed25519", "cv25519", PASSWORD),
            ("Rsa Pw <rsapw@example.com>", "rsa2048", "rsa2048", PASSWORD),
        ):
            email, fpr = _gen(g, uid, algo, sub, pw)
            g.fingerprints[email] = fpr
        # A second encryption subkey: gpg encrypts to the newest, pysequoia's decryptor picks only one.
        g.run("--passphrase", "", "--quick-add-key", g.fingerprints["ed@example.com"], "cv25519", "encr", "never")
        for email in g.fingerprints:
            g.subkeys[email] = _encryption_subkeys(g, email)
        g.file("pub.gpg", g.run("--export").stdout)
        g.file("test.sec.gpg", g.run("--export-secret-keys", "test@example.com").stdout)
        g.file("ed.sec.gpg", g.run("--export-secret-keys", "ed@example.com").stdout)
        g.file("ed.sec.asc", g.run("--armor", "--export-secret-keys", "ed@example.com").stdout)
        pw_args = ("--passphrase", PASSWORD, "--export-secret-keys", "pw@example.com")
        g.file("pw.sec.gpg", g.run(*pw_args).stdout)
        rsa_pw_args = ("--passphrase", PASSWORD, "--export-secret-keys", "rsapw@example.com")
        g.file("rsapw.sec.gpg", g.run(*rsa_pw_args).stdout)
        yield g
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=g.env(), capture_output=True, check=False)


def public(gpg: Gpg) -> list[PgpPublicKey]:
    keys = load_public_keys((gpg.out / "pub.gpg").read_bytes(), "pub.gpg")
    assert keys is not None
    return keys


def secret(gpg: Gpg, name: str, password: bytes | None = None) -> list[PgpSecretKey]:
    path = gpg.out / name
    keys = load_secret_keys(path.read_bytes(), str(path), password)
    assert keys is not None
    return keys


def wrap_to(gpg: Gpg, *recipients: str) -> bytes:
    keys = public(gpg)
    chosen = [k for r in recipients for k in find_recipients(keys, r, "pub.gpg")]
    return PgpWrapper(chosen).wrap(OPTIONS)


def unwrap(keys: list[PgpSecretKey], message: bytes) -> bytes:
    return PgpUnwrapper(keys).unwrap(ANNOTATION, message)


# --- interop with gpg ---------------------------------------------------------------------------------


@pytest.mark.interop
def test_wrap_is_opened_by_gpg_with_aes256(gpg: Gpg) -> None:
    message = wrap_to(gpg, "test@example.com")
    done = gpg.decrypt(message)
    assert done.returncode == 0, done.stderr
    assert done.stdout == OPTIONS
    assert b"AES256" in done.stderr


@pytest.mark.interop
def test_wrap_packets_are_pkesk_v3_and_seipd_v1_with_mdc_binary_uncompressed(gpg: Gpg) -> None:
    message = wrap_to(gpg, "test@example.com")
    assert message[0] & 0x80  # a binary packet header, not "-----BEGIN PGP MESSAGE-----"
    listing = gpg.list_packets(message)
    assert listing.count(":pubkey enc packet: version 3") == 1
    assert ":encrypted data packet:" in listing
    assert "mdc_method: 2" in listing
    assert ":literal data packet:" in listing
    assert "compressed packet" not in listing
    assert ":aead encrypted packet:" not in listing
    assert f"keyid {gpg.subkeys['test@example.com'][0][-16:]}" in listing


@pytest.mark.interop
def test_unwrap_gpg_made_compressed_message(gpg: Gpg) -> None:
    message = gpg.encrypt("test@example.com")
    assert "compressed packet" in gpg.list_packets(message)
    assert unwrap(secret(gpg, "test.sec.gpg"), message) == OPTIONS


@pytest.mark.interop
def test_two_recipients_each_secret_key_alone_unwraps(gpg: Gpg) -> None:
    message = wrap_to(gpg, "test@example.com", "Ed User")
    listing = gpg.list_packets(message)
    # RSA subkey + both Ed encryption subkeys
    assert listing.count(":pubkey enc packet: version 3") == 3
    assert unwrap(secret(gpg, "test.sec.gpg"), message) == OPTIONS
    assert unwrap(secret(gpg, "ed.sec.gpg"), message) == OPTIONS
    assert gpg.decrypt(message).stdout == OPTIONS


@pytest.mark.interop
def test_too_many_session_key_packets_are_refused_before_any_key_is_tried(gpg: Gpg) -> None:
    message = wrap_to(gpg, "test@example.com", "Ed User")  # three PKESKs
    unwrapper = PgpUnwrapper(secret(gpg, "test.sec.gpg"), limits=Limits(max_key_recipients=2))
    with pytest.raises(KeyUnwrapError, match="3 session key packets, more than the 2 accepted"):
        unwrapper.unwrap(ANNOTATION, message)


@pytest.mark.interop
@pytest.mark.parametrize("which", [0, 1])
def test_unwrap_with_each_of_several_encryption_subkeys(gpg: Gpg, which: int) -> None:
    subkey = gpg.subkeys["ed@example.com"][which]
    message = gpg.encrypt(f"{subkey}!")
    assert f"keyid {subkey[-16:]}" in gpg.list_packets(message)
    assert unwrap(secret(gpg, "ed.sec.gpg"), message) == OPTIONS


@pytest.mark.interop
def test_armored_secret_key_is_accepted(gpg: Gpg) -> None:
    keys = secret(gpg, "ed.sec.asc")
    assert [k.fingerprint for k in keys] == [gpg.fingerprints["ed@example.com"]]
    assert unwrap(keys, gpg.encrypt("ed@example.com")) == OPTIONS


@pytest.mark.interop
def test_password_protected_secret_key(gpg: Gpg) -> None:
    data = (gpg.out / "pw.sec.gpg").read_bytes()
    with pytest.raises(ConfigError, match=r"pw\.sec\.gpg: .*password-protected"):
        load_secret_keys(data, "pw.sec.gpg", None)
    with pytest.raises(ConfigError, match=r"pw\.sec\.gpg: wrong password"):
        load_secret_keys(data, "pw.sec.gpg", b"nope")
    keys = secret(gpg, "pw.sec.gpg", PASSWORD.encode())
    assert unwrap(keys, gpg.encrypt("pw@example.com")) == OPTIONS
    assert unwrap(keys, wrap_to(gpg, "pw@example.com")) == OPTIONS


@pytest.mark.interop
def test_wrong_key_names_pgp_and_the_key_files(gpg: Gpg) -> None:
    message = wrap_to(gpg, "test@example.com")
    keys = secret(gpg, "ed.sec.gpg") + secret(gpg, "ed.sec.asc")
    with pytest.raises(KeyUnwrapError, match=r"^pgp: .*ed\.sec\.gpg, .*ed\.sec\.asc.*none of the OpenPGP"):
        unwrap(keys, message)


@pytest.mark.interop
@pytest.mark.parametrize("where", [-1, -30, 300])
def test_tampered_message_is_refused(gpg: Gpg, where: int) -> None:
    message = bytearray(wrap_to(gpg, "test@example.com"))
    message[where] ^= 0x01  # MDC, literal data, and the RSA session key
    with pytest.raises(KeyUnwrapError, match=r"^pgp: "):
        unwrap(secret(gpg, "test.sec.gpg"), bytes(message))


@pytest.mark.interop
def test_find_recipients(gpg: Gpg) -> None:
    keys = public(gpg)
    fpr = gpg.fingerprints["test@example.com"]

    def found(recipient: str) -> list[str]:
        return [k.fingerprint for k in find_recipients(keys, recipient, "pub.gpg")]

    assert found("test@example.com") == [fpr]
    assert found("Test User") == [fpr]
    assert found(fpr) == [fpr]
    assert found(fpr.lower()) == [fpr]
    assert found("0x" + fpr[-16:]) == [fpr]  # long key ID
    assert found(gpg.subkeys["test@example.com"][0]) == [fpr]  # subkey fingerprint
    assert found("Ed User") == [gpg.fingerprints["ed@example.com"]]
    for miss in ("test", "Test User <test@example.com>", "TEST@example.com", "nobody@example.com", fpr[:-1]):
        with pytest.raises(ConfigError, match=r"no key in pub\.gpg"):
            find_recipients(keys, miss, "pub.gpg")


@pytest.mark.interop
def test_export_gnupg_public_keyring(gpg: Gpg, tmp_path: Path) -> None:
    exported = export_gnupg_public_keyring(str(gpg.home))
    keys = load_public_keys(exported, "the GnuPG keyring")
    assert keys is not None
    assert {k.fingerprint for k in keys} == set(gpg.fingerprints.values())
    empty = tmp_path / "empty-home"
    empty.mkdir(mode=0o700)
    try:
        with pytest.raises(ConfigError, match="is empty"):
            export_gnupg_public_keyring(str(empty))
    finally:
        env = {**os.environ, "GNUPGHOME": str(empty)}
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, check=False)


@pytest.mark.interop
def test_public_loader_accepts_armored_and_secret_keyrings(gpg: Gpg) -> None:
    armored = gpg.run("--armor", "--export", "ed@example.com").stdout
    keys = load_public_keys(armored, "ed.asc")
    assert keys is not None
    assert [k.fingerprint for k in keys] == [gpg.fingerprints["ed@example.com"]]
    from_secret = load_public_keys((gpg.out / "test.sec.gpg").read_bytes(), "test.sec.gpg")
    assert from_secret is not None
    assert gpg.decrypt(PgpWrapper(from_secret).wrap(OPTIONS)).stdout == OPTIONS


@pytest.mark.interop
def test_public_keyring_is_not_a_secret_key(gpg: Gpg) -> None:
    assert load_secret_keys((gpg.out / "pub.gpg").read_bytes(), "pub.gpg", None) is None


# --- Go's framing (golang.org/x/crypto/openpgp, skopeo 1.9.3) --------------------------------------------


def new_format_packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def partial_packet(tag: int, body: bytes, chunk: int = 128) -> bytes:
    """A new-format packet in partial chunks of ``chunk`` octets (Go writes 128, 64, ...; < 512)."""
    out = bytes([0xC0 | tag])
    while len(body) > chunk:
        out += bytes([224 + chunk.bit_length() - 1]) + body[:chunk]
        body = body[chunk:]
    return out + new_format_packet(tag, body)[1:]


def rsa_encryption_subkey(gpg: Gpg, email: str) -> tuple[bytes, rsa.RSAPublicKey]:
    exported = gpg.run("--export", email).stdout
    for packet in PacketPile.from_bytes(exported):
        if packet.tag == Tag.PublicSubkey and packet.key_id:
            n_bits = int.from_bytes(packet.body[6:8], "big")
            n_end = 8 + (n_bits + 7) // 8
            n = int.from_bytes(packet.body[8:n_end], "big")
            e = int.from_bytes(packet.body[n_end + 2 :], "big")
            return bytes.fromhex(packet.key_id), rsa.RSAPublicNumbers(e, n).public_key()
    pytest.fail(f"no RSA subkey for {email}")


def go_style_encrypt(gpg: Gpg, email: str, data: bytes = OPTIONS) -> bytes:
    """What Go's x/crypto/openpgp writes: non-canonical RSA MPI, small partial chunks, literal format t."""
    key_id, public_key = rsa_encryption_subkey(gpg, email)
    session = os.urandom(32)
    framed = bytes([9]) + session + (sum(session) % 65536).to_bytes(2, "big")
    while True:  # Go keeps leading zero octets; find a ciphertext that has one (1 in 256)
        ciphertext = public_key.encrypt(framed, padding.PKCS1v15())
        if ciphertext[0] == 0:
            break
    pkesk = bytes([3]) + key_id + bytes([1]) + (8 * len(ciphertext)).to_bytes(2, "big") + ciphertext
    literal = partial_packet(11, b"t\x00\x00\x00\x00\x00" + data, chunk=32)
    prefix = os.urandom(16)
    plain = prefix + prefix[14:] + literal + b"\xd3\x14"
    plain += hashlib.sha1(plain).digest()  # noqa: S324 — the MDC is SHA-1 by definition
    encrypted = Cipher(algorithms.AES(session), CFB(bytes(16))).encryptor().update(plain)
    return new_format_packet(1, pkesk) + partial_packet(18, b"\x01" + encrypted)


@pytest.mark.interop
def test_go_style_message_is_unwrapped(gpg: Gpg) -> None:
    message = go_style_encrypt(gpg, "test@example.com")
    assert gpg.decrypt(message).stdout == OPTIONS  # gpg agrees it is a valid message
    assert unwrap(secret(gpg, "test.sec.gpg"), message) == OPTIONS


@pytest.mark.interop
def test_go_style_message_with_password_protected_rsa_key(gpg: Gpg) -> None:
    keys = secret(gpg, "rsapw.sec.gpg", PASSWORD.encode())
    assert unwrap(keys, go_style_encrypt(gpg, "rsapw@example.com")) == OPTIONS


@pytest.mark.interop
@pytest.mark.parametrize("where", [-1, -25, -100])
def test_tampered_go_style_message_is_refused(gpg: Gpg, where: int) -> None:
    message = bytearray(go_style_encrypt(gpg, "test@example.com"))
    message[where] ^= 0x01  # MDC, MDC header, literal data
    with pytest.raises(KeyUnwrapError, match=r"^pgp: .*none of the OpenPGP secret keys"):
        unwrap(secret(gpg, "test.sec.gpg"), bytes(message))


@pytest.mark.interop
def test_go_style_message_to_another_key_is_refused(gpg: Gpg) -> None:
    with pytest.raises(KeyUnwrapError, match=r"rsapw\.sec\.gpg"):
        unwrap(secret(gpg, "rsapw.sec.gpg", PASSWORD.encode()), go_style_encrypt(gpg, "test@example.com"))


@pytest.mark.interop
@pytest.mark.slow
def test_skopeo_round_trip(gpg: Gpg, tmp_path: Path) -> None:
    """skopeo 1.9.3 encrypts to pgp: recipients, we unwrap; we rewrap, skopeo decrypts."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    from tests.fixtures.images import build_layout, manifest, oci_ref, write_manifest  # noqa: PLC0415

    # Go's x/crypto/openpgp cannot read a keyring with EdDSA keys, so skopeo gets the RSA keys only.
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    go = Gpg(home, gpg.out, {}, {})
    go.run("--import", stdin=gpg.run("--export", "test@example.com", "rsapw@example.com").stdout)
    try:
        src, enc, dec = build_layout(tmp_path / "src"), tmp_path / "enc", tmp_path / "dec"

        def skopeo(*args: str) -> None:
            done = subprocess.run(["skopeo", "copy", *args], env=go.env(), capture_output=True, check=False)
            assert done.returncode == 0, done.stderr.decode(errors="replace")

        recipients = ("--encryption-key", "pgp:test@example.com", "--encryption-key", "pgp:rsapw@example.com")
        skopeo(*recipients, oci_ref(src), oci_ref(enc))
        test_keys = secret(gpg, "test.sec.gpg")
        pw_keys = secret(gpg, "rsapw.sec.gpg", PASSWORD.encode())
        rsa_fingerprints = (gpg.fingerprints["test@example.com"], gpg.fingerprints["rsapw@example.com"])
        ours = PgpWrapper([k for k in public(gpg) if k.fingerprint in rsa_fingerprints])
        new_manifest = manifest(enc)
        for layer in new_manifest["layers"]:
            entry = base64.b64decode(layer["annotations"][ANNOTATION])
            assert gpg.list_packets(entry).count(":pubkey enc packet: version 3") == 2
            options = unwrap(test_keys, entry)
            assert unwrap(pw_keys, entry) == options
            assert options.startswith(b'{"symkey":')
            layer["annotations"][ANNOTATION] = base64.b64encode(ours.wrap(options)).decode()
        write_manifest(enc, new_manifest)
        skopeo("--decryption-key", str(gpg.out / "test.sec.gpg"), oci_ref(enc), oci_ref(dec))
        assert [layer["mediaType"] for layer in manifest(dec)["layers"]] == [
            layer["mediaType"] for layer in manifest(src)["layers"]
        ]
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=go.env(), capture_output=True, check=False)


# --- without gpg: sequoia-made keys ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sq_tsk() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate(user_ids=["Alice (work) <alice@example.com>", "bob@example.com"])


@pytest.fixture(scope="module")
def sq_secret(sq_tsk: pysequoia.Tsk) -> list[PgpSecretKey]:
    keys = load_secret_keys(bytes(sq_tsk), "alice.sec", None)
    assert keys is not None
    return keys


@pytest.fixture(scope="module")
def sq_public(sq_tsk: pysequoia.Tsk) -> list[PgpPublicKey]:
    keys = load_public_keys(bytes(sq_tsk.extract_certificate()), "alice.pub")
    assert keys is not None
    return keys


def sq_encrypt(sq_tsk: pysequoia.Tsk, data: bytes = OPTIONS) -> bytes:
    return pysequoia.encrypt(data, recipients=[sq_tsk.extract_certificate()], armor=False)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b'{"kty":"RSA"}', b"-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n", b"\x30\x82"],
)
def test_non_openpgp_input_is_not_a_key(data: bytes) -> None:
    assert load_public_keys(data, "x") is None
    assert load_secret_keys(data, "x", None) is None


def test_protocols_and_names(sq_public: list[PgpPublicKey], sq_secret: list[PgpSecretKey]) -> None:
    wrapper, unwrapper = PgpWrapper(sq_public), PgpUnwrapper(sq_secret)
    assert isinstance(wrapper, KeyWrapper)
    assert isinstance(unwrapper, KeyUnwrapper)
    assert wrapper.annotation_key == ANNOTATION == pgp.ANNOTATION_KEY
    assert unwrapper.scheme == "pgp"
    assert unwrapper.handles(ANNOTATION)
    assert not unwrapper.handles("org.opencontainers.image.enc.keys.jwe")
    with pytest.raises(ValueError, match="cannot unwrap"):
        unwrapper.unwrap("org.opencontainers.image.enc.keys.jwe", b"x")
    with pytest.raises(ValueError, match="at least one"):
        PgpWrapper([])
    assert sq_public[0].source == "alice.pub"
    assert sq_secret[0].source == "alice.sec"
    assert sq_public[0].fingerprint == sq_secret[0].fingerprint


def test_seipdv2_recipients_are_refused_for_go_compatibility(sq_public: list[PgpPublicKey]) -> None:
    # Sequoia-made keys advertise SEIPDv2; Go ocicrypt cannot read such messages.
    with pytest.raises(UnsupportedError, match=rf"{sq_public[0].fingerprint}.*SEIPDv2"):
        PgpWrapper(sq_public).wrap(OPTIONS)


def test_seipdv2_message_is_unwrapped(sq_tsk: pysequoia.Tsk, sq_secret: list[PgpSecretKey]) -> None:
    message = sq_encrypt(sq_tsk)
    assert [p.tag == Tag.SEIP and p.body[0] == 2 for p in PacketPile.from_bytes(message)][-1]
    assert unwrap(sq_secret, message) == OPTIONS


def test_message_without_integrity_protection_is_refused(sq_tsk: pysequoia.Tsk, sq_secret: list[PgpSecretKey]) -> None:
    packets = list(PacketPile.from_bytes(sq_encrypt(sq_tsk)))
    session_keys = b"".join(bytes(p) for p in packets if p.tag == Tag.PKESK)
    sed = session_keys + new_format_packet(9, packets[-1].body)  # tag 9: SED, no MDC
    with pytest.raises(KeyUnwrapError, match="without integrity protection"):
        unwrap(sq_secret, sed)


def test_empty_plaintext_is_refused(sq_tsk: pysequoia.Tsk, sq_secret: list[PgpSecretKey]) -> None:
    with pytest.raises(KeyUnwrapError, match="empty"):
        unwrap(sq_secret, sq_encrypt(sq_tsk, b""))


def test_oversized_plaintext_is_refused(sq_tsk: pysequoia.Tsk, sq_secret: list[PgpSecretKey]) -> None:
    unwrapper = PgpUnwrapper(sq_secret, limits=Limits(max_private_options_bytes=len(OPTIONS) - 1))
    with pytest.raises(KeyUnwrapError, match="exceeds"):
        unwrapper.unwrap(ANNOTATION, sq_encrypt(sq_tsk))


@pytest.mark.parametrize("entry", [b"", b"garbage", b"\xc1\x01\x03"])
def test_malformed_entry_is_refused(sq_secret: list[PgpSecretKey], entry: bytes) -> None:
    with pytest.raises(KeyUnwrapError, match=r"^pgp: "):
        unwrap(sq_secret, entry)


def test_message_without_session_key_packets_is_refused(sq_tsk: pysequoia.Tsk, sq_secret: list[PgpSecretKey]) -> None:
    seipd_only = bytes(list(PacketPile.from_bytes(sq_encrypt(sq_tsk)))[-1])
    with pytest.raises(KeyUnwrapError, match="not a public-key encrypted"):
        unwrap(sq_secret, seipd_only)


def test_find_recipients_parses_user_ids(sq_public: list[PgpPublicKey]) -> None:
    fpr = sq_public[0].fingerprint
    for recipient in ("alice@example.com", "Alice", "bob@example.com", fpr):
        assert [k.fingerprint for k in find_recipients(sq_public, recipient, "alice.pub")] == [fpr]
    for miss in ("Alice (work)", "work", "bob"):
        with pytest.raises(ConfigError, match=r"no key in alice\.pub"):
            find_recipients(sq_public, miss, "alice.pub")


def test_duplicate_recipients_are_merged(sq_public: list[PgpPublicKey], sq_secret: list[PgpSecretKey]) -> None:
    # Go matches every UID, so a key with two matching UIDs could appear twice; one PKESK set is enough.
    wrapper = PgpWrapper(sq_public + sq_public)
    with pytest.raises(UnsupportedError, match=rf"keys {sq_public[0].fingerprint} all"):
        wrapper.wrap(OPTIONS)


def test_export_without_gpg_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no gpg2 or gpg on it
    with pytest.raises(ConfigError, match=r"gpg is not installed.*keyring file"):
        export_gnupg_public_keyring(None)
