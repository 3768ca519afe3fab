"""Benchmark of cocoguest's ocicrypt layer engine and ``cocoguest copy`` against skopeo (``make bench``).

In one run it builds an OCI layout with one random tar+gzip layer of ``--size-mib`` MiB, then prints:

1. the floor: one in-memory loop of AES-256-CTR + HMAC-SHA256 over the layer's bytes, chunked;
2. ``encrypt_stream`` / ``decrypt_stream`` file-to-file throughput and its ratio to the floor;
3. wall time of ``cocoguest copy`` vs ``skopeo copy`` encrypting (``--encryption-key jwe:pub.pem``) and
   decrypting (``--decryption-key priv.pem``) the image, and the ratio cocoguest / skopeo;
4. the peak RSS of each copy process (``ru_maxrss`` of that one child, read with ``os.wait4``).

Every timing is the best of ``--repeat`` runs (the machine may be shared). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoguest.crypto.layer_cipher import CtrHmacEncryptor, new_key, new_nonce
from cocoguest.digest import Digest
from cocoguest.limits import DEFAULT_LIMITS, MiB
from cocoguest.ocicrypt.stream import decrypt_stream, encrypt_stream

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_BLOCK = 512
GZIP_WBITS = 31  # zlib: gzip container
STORED = 0  # zlib level 0: stored deflate blocks, so building the fixture is fast and skopeo sees real gzip


@dataclass(frozen=True)
class Layout:
    """The benchmark image."""

    path: Path
    layer: Path
    layer_digest: Digest
    layer_size: int


def _mb_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def _best(repeat: int, run: Callable[[], float]) -> float:
    """The shortest of ``repeat`` timings returned by ``run``."""
    return min(run() for _ in range(repeat))


# --- the fixture -------------------------------------------------------------------------------------------


def _write_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_layout(root: Path, size: int) -> Layout:
    """An OCI layout ``root`` with one gzip layer holding a tar of one ``size``-byte random file."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    tar_hash, gz_hash = hashlib.sha256(), hashlib.sha256()
    gz = zlib.compressobj(STORED, zlib.DEFLATED, GZIP_WBITS)
    tmp = blobs / "layer.tmp"
    with tmp.open("wb") as out:

        def emit(tar_bytes: bytes) -> None:
            tar_hash.update(tar_bytes)
            packed = gz.compress(tar_bytes)
            gz_hash.update(packed)
            out.write(packed)

        info = tarfile.TarInfo("random.bin")
        info.size, info.mode, info.mtime = size, 0o644, 0
        emit(info.tobuf(tarfile.PAX_FORMAT))
        left = size
        while left:
            piece = os.urandom(min(left, MiB))
            emit(piece)
            left -= len(piece)
        emit(bytes(-size % TAR_BLOCK) + bytes(2 * TAR_BLOCK))
        tail = gz.flush()
        gz_hash.update(tail)
        out.write(tail)
    layer_digest = Digest("sha256", gz_hash.hexdigest())
    layer = blobs / layer_digest.hex
    tmp.rename(layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{tar_hash.hexdigest()}"]},
    }
    config_desc = {"mediaType": CONFIG_TYPE, **_write_blob(root, json.dumps(config).encode())}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config_desc,
        "layers": [{"mediaType": LAYER_TYPE, "digest": str(layer_digest), "size": layer.stat().st_size}],
    }
    manifest_desc = {"mediaType": MANIFEST_TYPE, **_write_blob(root, json.dumps(manifest).encode())}
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    return Layout(root, layer, layer_digest, layer.stat().st_size)


def first_layer_digest(layout: Path) -> str:
    """The digest of the first layer of the only image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = Digest.parse(index["manifests"][0]["digest"])
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.hex).read_text())
    return str(manifest["layers"][0]["digest"])


# --- (1) floor and (2) engine ------------------------------------------------------------------------------


def floor_seconds(layer: Path, chunk: int) -> float:
    """Seconds of AES-CTR + HMAC alone over the layer, chunk by chunk from memory (reads are not timed)."""
    cipher = CtrHmacEncryptor(new_key(), new_nonce())
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    spent = 0.0
    with layer.open("rb", buffering=0) as src:
        while n := src.readinto(buffer):
            start = time.perf_counter()
            cipher.mac_update(cipher.keystream_xor(view[:n]))
            spent += time.perf_counter() - start
    cipher.finalize()
    return spent


def engine_seconds(layout: Layout, work: Path) -> tuple[float, float]:
    """Seconds of ``encrypt_stream`` (layer -> enc) and ``decrypt_stream`` (enc -> dec), files on disk."""
    key, nonce = new_key(), new_nonce()
    enc, dec = work / "engine.enc", work / "engine.dec"
    os.sync()  # so that earlier dirty pages do not throttle this run's writes
    start = time.perf_counter()
    with layout.layer.open("rb") as src, enc.open("wb") as dst:
        sealed = encrypt_stream(
            src, dst, key, nonce, source_digest=layout.layer_digest, source_size=layout.layer_size, what="bench"
        )
    encrypt = time.perf_counter() - start
    os.sync()
    start = time.perf_counter()
    with enc.open("rb") as src, dec.open("wb") as dst:
        opened = decrypt_stream(
            src,
            dst,
            key,
            nonce,
            sealed.hmac,
            source_digest=sealed.ciphertext_digest,
            source_size=sealed.size,
            what="bench",
        )
    decrypt = time.perf_counter() - start
    if opened.plaintext_digest != layout.layer_digest:
        sys.exit("bench: decrypt_stream did not give back the layer")
    enc.unlink()
    dec.unlink()
    return encrypt, decrypt


# --- (3) and (4) the CLIs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished child process."""

    seconds: float
    max_rss_kib: int


def run_measured(argv: Sequence[str], log: Path) -> Run:
    """Run ``argv``; return its wall time and the peak RSS of that very child (``os.wait4``).

    Raises:
        SystemExit: the command failed (its output is in ``log``).
    """
    os.sync()
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it; tell Popen
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed with {proc.returncode}:\n{log.read_text(errors='replace')}")
    return Run(seconds, usage.ru_maxrss)  # Linux: KiB


def best_run(repeat: int, argv: Sequence[str], dest: Path, log: Path) -> Run:
    """The fastest of ``repeat`` runs of ``argv`` (``dest`` is removed before each); its RSS is the max."""
    runs = []
    for _ in range(repeat):
        shutil.rmtree(dest, ignore_errors=True)
        runs.append(run_measured(argv, log))
    return Run(min(r.seconds for r in runs), max(r.max_rss_kib for r in runs))


def cocoguest_cli() -> Path | None:
    """The venv's ``cocoguest`` if it has a working ``copy`` command, else None (printing why)."""
    exe = Path(sys.executable).parent / "cocoguest"
    if not exe.exists():
        print(f"  (3)-(4) cocoguest: SKIPPED, {exe} does not exist (pip install -e . ?)")
        return None
    probe = subprocess.run([str(exe), "copy", "--help"], capture_output=True, check=False)
    if probe.returncode != 0:
        print(f"  (3)-(4) cocoguest: SKIPPED, `cocoguest copy --help` failed: {probe.stderr[-300:]!r}")
        return None
    return exe


def make_rsa_keys(work: Path) -> tuple[Path, Path]:
    """An RSA key pair made with openssl (priv.pem, pub.pem)."""
    priv, pub = work / "priv.pem", work / "pub.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(priv)],
        check=True,
        capture_output=True,
    )
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)], check=True)
    return priv, pub


def compare_clis(layout: Layout, work: Path, repeat: int) -> None:
    """Parts (3) and (4)."""
    skopeo = shutil.which("skopeo")
    cocoguest = cocoguest_cli()
    if skopeo is None:
        print("  (3)-(4): SKIPPED, skopeo is not installed (make peers)")
        return
    priv, pub = make_rsa_keys(work)
    src = f"oci:{layout.path}:latest"
    enc_sk, enc_cg = work / "enc-skopeo", work / "enc-cocoguest"
    dec_sk, dec_cg = work / "dec-skopeo", work / "dec-cocoguest"
    log = work / "cli.log"
    encrypt = ["copy", "--encryption-key", f"jwe:{pub}", src]
    # Both tools decrypt the image skopeo encrypted, so (3) is also an interop check.
    decrypt = ["copy", "--decryption-key", str(priv), f"oci:{enc_sk}:latest"]
    rows: list[tuple[str, Run, Run | None]] = []
    sk_enc = best_run(repeat, [skopeo, *encrypt, f"oci:{enc_sk}:latest"], enc_sk, log)
    cg_enc = None
    if cocoguest is not None:
        cg_enc = best_run(repeat, [str(cocoguest), *encrypt, f"oci:{enc_cg}:latest"], enc_cg, log)
    rows.append(("encrypt", sk_enc, cg_enc))
    sk_dec = best_run(repeat, [skopeo, *decrypt, f"oci:{dec_sk}:latest"], dec_sk, log)
    cg_dec = None
    if cocoguest is not None:
        cg_dec = best_run(repeat, [str(cocoguest), *decrypt, f"oci:{dec_cg}:latest"], dec_cg, log)
        if first_layer_digest(dec_cg) != str(layout.layer_digest):
            sys.exit("bench: cocoguest's decrypted image does not have the original layer")
    if first_layer_digest(dec_sk) != str(layout.layer_digest):
        sys.exit("bench: skopeo's decrypted image does not have the original layer")
    rows.append(("decrypt", sk_dec, cg_dec))
    for name, sk, cg in rows:
        line = f"  (3) copy {name}: skopeo {sk.seconds:6.2f} s ({_mb_s(layout.layer_size, sk.seconds):5.0f} MB/s)"
        if cg is not None:
            line += (
                f" | cocoguest {cg.seconds:6.2f} s ({_mb_s(layout.layer_size, cg.seconds):5.0f} MB/s)"
                f" | cocoguest/skopeo = {cg.seconds / sk.seconds:.2f}"
            )
        print(line)
    for name, sk, cg in rows:
        line = f"  (4) peak RSS {name}: skopeo {sk.max_rss_kib / 1024:6.1f} MiB"
        if cg is not None:
            line += f" | cocoguest {cg.max_rss_kib / 1024:6.1f} MiB"
        print(line)
    if cocoguest is None:
        print("  (3)-(4) cocoguest: not measured (see above)")


# --- main --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the random layer (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    parser.add_argument("--no-cli", action="store_true", help="skip (3)-(4), the CLI comparison")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    base = os.environ.get("TMPDIR") or "/var/tmp"
    work = Path(tempfile.mkdtemp(prefix="cocoguest-bench-", dir=base))
    try:
        print(f"bench: {args.size_mib} MiB layer in {work}; cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
        layout = build_layout(work / "src", args.size_mib * MiB)
        size = layout.layer_size
        chunk = DEFAULT_LIMITS.stream_chunk_bytes
        floor = _mb_s(size, _best(args.repeat, lambda: floor_seconds(layout.layer, chunk)))
        print(f"  (1) floor AES-CTR+HMAC in memory, {chunk // MiB} MiB chunks: {floor:6.0f} MB/s")
        timings = [engine_seconds(layout, work) for _ in range(args.repeat)]
        for name, seconds in (("encrypt", min(t[0] for t in timings)), ("decrypt", min(t[1] for t in timings))):
            speed = _mb_s(size, seconds)
            print(f"  (2) {name}_stream file to file: {speed:6.0f} MB/s = {speed / floor:4.0%} of the floor")
        if not args.no_cli:
            compare_clis(layout, work, args.repeat)
    finally:
        if args.keep:
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
