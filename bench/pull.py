"""Benchmark of ``cocoguest pull`` against ``skopeo copy && umoci unpack`` and the per-byte floor (issue 3).

In one run it:

1. builds (or reuses from a cache under ``$TMPDIR``) an OCI layout of a ``--size-mb`` MB, ``--layers``-layer
   tar+gzip image from seeded generated content: many small text-like and random files, a few big ones,
   directories, symlinks, files overwritten by later layers and a few whiteouts; written with ``tarfile``
   through zlib level 6. It also makes an RSA key pair and an encrypted copy of the image with
   ``cocoguest copy --encryption-key jwe:pub.pem``;
2. starts Debian's ``docker-registry`` on ``127.0.0.1:<free port>`` (plain HTTP, storage in the work
   directory) and pushes both images there with ``skopeo copy``;
3. times, best of ``--repeat`` with fresh destinations and ``os.sync()`` before each run, per image:

   * ``cocoguest pull --snapshotter copy`` into a bundle (a fresh ``--work-dir`` each run, so nothing is
     cached);
   * ``skopeo copy docker://... oci:DIR:1`` then ``umoci unpack --image DIR:1 BUNDLE``;
   * the floor: the layer blobs fetched over HTTP with ``http.client`` into files, then one
     ``gzip -dc BLOB | tar -x -C DIR`` per layer, one after the other (a naive shell script); for the
     encrypted image each blob is also AES-CTR + HMAC decrypted in this Python process on its way into
     ``gzip -dc`` (the layer keys are unwrapped before the clock starts);

4. prints wall time, MB/s of compressed (registry) bytes, the ratios cocoguest / (skopeo+umoci) and
   cocoguest / floor, and the peak RSS of each child process (``ru_maxrss`` from ``os.wait4``).

Targets from issue 3: <= 0.5x skopeo+umoci, <= 1.3x the floor, peak RSS <= 100 MB. Nothing here asserts a
timing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import json
import math
import os
import platform
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoguest.crypto.layer_cipher import CtrHmacDecryptor
from cocoguest.oci.descriptor import Descriptor
from cocoguest.ocicrypt.keyspecs import KeyContext, decryption_unwrappers
from cocoguest.ocicrypt.layer import public_options, unwrap_layer_key

MB = 1_000_000
MiB = 1 << 20
CHUNK = MiB
GZIP_LEVEL = 6
GZIP_WBITS = 31  # zlib: gzip container
MTIME = 1_700_000_000
FORMAT_VERSION = 1  # bump when the generated content changes, to invalidate the cache
TAG = "1"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
REGISTRY_READY_S = 15.0

# Share of each layer's compressed bytes by kind of content.
BIG_RANDOM_SHARE = 0.40  # two big incompressible files (media, archives)
SMALL_RANDOM_SHARE = 0.20  # small incompressible files (binaries, .pyc, images)
SMALL_TEXT_SHARE = 0.35  # many small text-like files (sources, configs, docs)
BIG_TEXT_SHARE = 0.05  # one big text file (a log, a data dump)
SHARED_FILES = 20  # etc/bench/shared-N.txt: written by every layer, overwritten by the next
WHITEOUTS_PER_LAYER = 10  # upper layers delete this many files of the layer below
FILES_PER_DIR = 40


def _mb_s(size: int, seconds: float) -> float:
    return size / seconds / MB


# --- the image ---------------------------------------------------------------------------------------------


class _GzipSink(io.RawIOBase):
    """A write-only file: gzip level 6 into ``out``, hashing the tar (diff_id) and the gzip (digest)."""

    def __init__(self, out: io.BufferedWriter) -> None:
        super().__init__()
        self._out = out
        self._gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
        self.tar_hash = hashlib.sha256()
        self.gz_hash = hashlib.sha256()
        self.size = 0
        self.tar_bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.tar_hash.update(view)
        self.tar_bytes += len(view)
        self._emit(self._gz.compress(view))
        return len(view)

    def _emit(self, packed: bytes) -> None:
        if packed:
            self.gz_hash.update(packed)
            self._out.write(packed)
            self.size += len(packed)

    def finish(self) -> None:
        self._emit(self._gz.flush())


class _RandomReader(io.RawIOBase):
    """``size`` seeded random bytes, read in pieces (big files never sit in memory whole)."""

    def __init__(self, rng: random.Random, size: int) -> None:
        super().__init__()
        self._rng = rng
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        self._left -= n
        return self._rng.randbytes(n)


class _TextReader(io.RawIOBase):
    """``size`` bytes of text: random slices of a word pool, so that gzip sees text-like redundancy."""

    def __init__(self, rng: random.Random, pool: bytes, size: int) -> None:
        super().__init__()
        self._rng = rng
        self._pool = pool
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        self._left -= n
        return _text(self._rng, self._pool, n)


def _text(rng: random.Random, pool: bytes, size: int) -> bytes:
    parts, left = [], size
    while left:
        take = min(left, rng.randint(256, 16 * 1024))
        start = rng.randrange(0, len(pool) - take)
        parts.append(pool[start : start + take])
        left -= take
    return b"".join(parts)


def _word_pool(rng: random.Random, size: int) -> bytes:
    """Text of ``size`` bytes from a Zipf-weighted vocabulary, in lines of a few words, some indented."""
    letters = "abcdefghijklmnopqrstuvwxyz_"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(2, 12))) for _ in range(5000)]
    vocabulary += ["=", "(", ")", "{", "}", "0", "1", "return", "if", "the", "self", "def", "#"]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    rng.shuffle(vocabulary)
    words = rng.choices(vocabulary, weights, k=size // 5)
    lines, i = [], 0
    while i < len(words):
        n = rng.randint(3, 12)
        lines.append(" " * (4 * rng.randint(0, 3)) + " ".join(words[i : i + n]))
        i += n
    return "\n".join(lines).encode()[:size]


def _log_sizes(rng: random.Random, total: int, median: int, low: int, high: int) -> list[int]:
    """File sizes drawn log-normally around ``median`` (clamped to [low, high]) summing to about ``total``."""
    sizes, left = [], total
    while left > 0:
        size = min(left, max(low, min(high, int(rng.lognormvariate(math.log(median), 1.0)))))
        sizes.append(size)
        left -= size
    return sizes


@dataclass(frozen=True)
class BuiltLayer:
    """One layer blob written by :func:`build_layer`."""

    digest: str
    diff_id: str
    size: int
    files: int
    tar_bytes: int


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, MTIME
    info.uname = info.gname = "root"
    return info


def build_layer(blobs: Path, seed: int, index: int, budget: int) -> BuiltLayer:
    """Write layer ``index`` (about ``budget`` compressed bytes) into ``blobs``; deterministic in ``seed``.

    Layer N > 0 overwrites the shared files and whites out ``WHITEOUTS_PER_LAYER`` files of layer N - 1
    (whose names it knows because it regenerates them from the same seed).
    """
    rng = random.Random(f"cocoguest-bench-pull/{seed}/{index}")  # noqa: S311 (reproducible content)
    pool = _word_pool(rng, 8 * MiB)
    ratio = len(pool[: 4 * MiB]) / len(zlib.compress(pool[: 4 * MiB], GZIP_LEVEL))
    # (name, kind, size) for regular files; kind "r" random, "t" text.
    files: list[tuple[str, str, int]] = []
    big = int(budget * BIG_RANDOM_SHARE)
    files.append((f"opt/layer{index}/data/archive.bin", "r", big * 5 // 8))
    files.append((f"opt/layer{index}/data/model.bin", "r", big - big * 5 // 8))
    files.append((f"var/log/layer{index}/big.log", "t", int(budget * BIG_TEXT_SHARE * ratio)))
    smalls = [("r", s) for s in _log_sizes(rng, int(budget * SMALL_RANDOM_SHARE), 16 * 1024, 64, 512 * 1024)]
    smalls += [("t", s) for s in _log_sizes(rng, int(budget * SMALL_TEXT_SHARE * ratio), 4 * 1024, 16, 256 * 1024)]
    rng.shuffle(smalls)
    for n, (kind, size) in enumerate(smalls):
        d = n // FILES_PER_DIR
        files.append((f"usr/lib/layer{index}/pkg{d // 50:03d}/mod{d % 50:02d}/f{n:06d}", kind, size))
    tmp = blobs / f"layer{index}.tmp"
    with tmp.open("wb") as out:
        sink = _GzipSink(out)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            made: set[str] = set()

            def mkdirs(path: str) -> None:
                parts = path.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in made:
                        made.add(d)
                        tar.addfile(_info(d + "/", tarfile.DIRTYPE, 0o755))

            if index > 0:
                below = random.Random(f"cocoguest-bench-pull/{seed}/{index - 1}/whiteouts")  # noqa: S311
                for n in below.sample(range(200), WHITEOUTS_PER_LAYER):
                    d = n // FILES_PER_DIR
                    name = f"usr/lib/layer{index - 1}/pkg{d // 50:03d}/mod{d % 50:02d}/.wh.f{n:06d}"
                    mkdirs(name)
                    tar.addfile(_info(name))
            for s in range(SHARED_FILES):
                data = _text(rng, pool, rng.randint(100, 4000))
                mkdirs(f"etc/bench/shared-{s}.txt")
                tar.addfile(_info(f"etc/bench/shared-{s}.txt", size=len(data)), io.BytesIO(data))
            for n, (name, kind, size) in enumerate(files):
                mkdirs(name)
                mode = 0o755 if kind == "r" else 0o644
                reader = _RandomReader(rng, size) if kind == "r" else _TextReader(rng, pool, size)
                tar.addfile(_info(name, mode=mode, size=size), reader)
                if n % 50 == 7:  # a symlink now and then, as packages have
                    link = _info(name + ".link", tarfile.SYMTYPE, 0o777)
                    link.linkname = name.rsplit("/", 1)[1]
                    tar.addfile(link)
        sink.finish()
    digest = sink.gz_hash.hexdigest()
    tmp.rename(blobs / digest)
    return BuiltLayer(f"sha256:{digest}", f"sha256:{sink.tar_hash.hexdigest()}", sink.size, len(files), sink.tar_bytes)


def _write_blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}.get(
        machine, machine
    )


def build_layout(root: Path, size: int, layers: int, seed: int) -> list[BuiltLayer]:
    """An OCI layout at ``root`` (tag ``1``) of ``layers`` gzip layers totalling about ``size`` bytes."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    with ProcessPoolExecutor(max_workers=min(layers, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(build_layer, blobs, seed, i, size // layers) for i in range(layers)]
        built = [f.result() for f in futures]
    config = {
        "architecture": _goarch(),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in built]},
    }
    config_desc = {"mediaType": CONFIG_TYPE, **_write_blob(blobs, json.dumps(config).encode())}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config_desc,
        "layers": [{"mediaType": LAYER_TYPE, "digest": b.digest, "size": b.size} for b in built],
    }
    manifest_desc = {"mediaType": MANIFEST_TYPE, **_write_blob(blobs, json.dumps(manifest).encode())}
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": TAG}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    return built


def layer_descriptors(layout: Path) -> list[dict[str, Any]]:
    """The layer descriptors (JSON) of the only image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].removeprefix("sha256:")
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return list(manifest["layers"])


def make_rsa_keys(directory: Path) -> tuple[Path, Path]:
    """An RSA key pair made with openssl (priv.pem, pub.pem)."""
    priv, pub = directory / "priv.pem", directory / "pub.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(priv)],
        check=True,
        capture_output=True,
    )
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)], check=True)
    return priv, pub


@dataclass(frozen=True)
class Images:
    """The cached fixture: the plain and encrypted layouts and the key pair."""

    plain: Path
    encrypted: Path
    priv: Path
    pub: Path
    tar_bytes: int
    files: int


def cached_images(base: Path, size: int, layers: int, seed: int, cocoguest: Path) -> Images:
    """Build the fixture under ``base``, or reuse it if a previous run completed it for the same parameters."""
    root = base / f"cocoguest-bench-pull-cache/v{FORMAT_VERSION}-{size // MB}MB-{layers}l-seed{seed}"
    done = root / "complete.json"
    if done.exists():
        print(f"bench: reusing the image cache {root}")
        meta = json.loads(done.read_text())
        return Images(root / "plain", root / "encrypted", root / "priv.pem", root / "pub.pem", **meta)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"bench: building the image in {root} (cached for later runs) ...", flush=True)
    start = time.perf_counter()
    built = build_layout(root / "plain", size, layers, seed)
    total = sum(b.size for b in built)
    print(f"bench: built {layers} layers, {total / MB:.0f} MB compressed, in {time.perf_counter() - start:.1f} s")
    meta = {"tar_bytes": sum(b.tar_bytes for b in built), "files": sum(b.files for b in built)}
    images = Images(root / "plain", root / "encrypted", root / "priv.pem", root / "pub.pem", **meta)
    make_rsa_keys(root)
    subprocess.run(
        [str(cocoguest), "copy", "-q", "--encryption-key", f"jwe:{images.pub}",
         f"oci:{images.plain}:{TAG}", f"oci:{images.encrypted}:{TAG}"],
        check=True,
    )  # fmt: skip
    done.write_text(json.dumps(meta))
    return images


# --- the registry ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def registry(directory: Path) -> Iterator[str]:
    """Run ``docker-registry serve`` on ``127.0.0.1:<free port>``, plain HTTP; yield ``host:port``."""
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("bench: docker-registry (Debian package docker-registry) is not installed")
    directory.mkdir(parents=True)
    host = f"127.0.0.1:{_free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "storage")}},
        "http": {"addr": host, "secret": uuid.uuid4().hex},
    }
    (directory / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = directory / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "serve", str(directory / "config.yml")], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + REGISTRY_READY_S
        while True:
            if process.poll() is not None:
                sys.exit(f"bench: docker-registry exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{host}/v2/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    sys.exit(f"bench: docker-registry not ready after {REGISTRY_READY_S} s")
                time.sleep(0.05)
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def push(layout: Path, ref: str) -> None:
    """``skopeo copy oci:LAYOUT:1 docker://REF``."""
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
         f"oci:{layout}:{TAG}", f"docker://{ref}"],
        check=True,
    )  # fmt: skip


# --- the contestants ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One measured run: wall seconds, peak RSS (KiB; 0 = not measured) and a note on its parts."""

    seconds: float
    max_rss_kib: int = 0
    parts: str = ""


# ``ru_maxrss`` of a child includes the RSS its parent had when it forked (the kernel keeps the high-water
# mark of the address space that ``exec`` replaces), so a child of this (large) Python process would report
# at least our own RSS. Children are therefore forked by this small launcher (``python -I -S``, about 7 MiB),
# which reports the wall time and ``ru_maxrss`` of its one child; readings of ~7 MiB mean "at most that".
_LAUNCHER = """
import os, sys, time
result, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(result, "w") as f:
    f.write(f"{seconds} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def launch(argv: Sequence[str], log: Path, stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start ``argv`` under the RSS launcher; finish with :func:`finish`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(log) + ".rusage", *argv],
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen[bytes], log: Path, what: str) -> Run:
    """Wait for a :func:`launch` ed process; its child's wall time and peak RSS (KiB).

    Raises:
        SystemExit: the command failed (its output is in ``log``).
    """
    if proc.wait() != 0:
        sys.exit(f"bench: {what} failed with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
    seconds, rss = (log.with_name(log.name + ".rusage")).read_text().split()
    return Run(float(seconds), int(rss))


def run_child(argv: Sequence[str], log: Path) -> Run:
    """Run ``argv``; its wall time and the peak RSS of that very child (Linux: KiB)."""
    return finish(launch(argv, log), log, shlex.join(argv))


@dataclass(frozen=True)
class Variant:
    """One image as pushed: its reference and its layer descriptors."""

    name: str
    ref: str
    layers: list[dict[str, Any]]
    priv: Path | None  # the decryption key, for the encrypted image

    @property
    def compressed(self) -> int:
        return sum(int(d["size"]) for d in self.layers)


def run_cocoguest(cocoguest: Path, v: Variant, scratch: Path) -> Run:
    """``cocoguest pull --snapshotter copy`` into ``scratch/bundle`` with a fresh ``scratch/work``."""
    argv = [str(cocoguest), "pull", "-q", "--insecure-policy", "--tls-verify=false", "--snapshotter", "copy",
            "--work-dir", str(scratch / "work")]  # fmt: skip
    if v.priv is not None:
        argv += ["--decryption-key", str(v.priv)]
    argv += [f"docker://{v.ref}", str(scratch / "bundle")]
    (scratch / "work").mkdir()
    os.sync()
    return run_child(argv, scratch / "cocoguest.log")


def run_skopeo_umoci(v: Variant, scratch: Path) -> Run:
    """``skopeo copy docker://... oci:DIR:1 && umoci unpack --image DIR:1 BUNDLE``."""
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"]
    if v.priv is not None:
        argv += ["--decryption-key", str(v.priv)]
    argv += [f"docker://{v.ref}", f"oci:{scratch / 'oci'}:{TAG}"]
    os.sync()
    sk = run_child(argv, scratch / "skopeo.log")
    um = run_child(["umoci", "unpack", "--image", f"{scratch / 'oci'}:{TAG}", str(scratch / "bundle")],
                   scratch / "umoci.log")  # fmt: skip
    rss = max(sk.max_rss_kib, um.max_rss_kib)
    parts = (
        f"skopeo {sk.seconds:.2f} s ({sk.max_rss_kib / 1024:.0f} MiB)"
        f" + umoci {um.seconds:.2f} s ({um.max_rss_kib / 1024:.0f} MiB)"
    )
    return Run(sk.seconds + um.seconds, rss, parts)


def _fetch_blob(host: str, repo: str, digest: str, dest: Path) -> None:
    conn = http.client.HTTPConnection(host, timeout=60)
    try:
        conn.request("GET", f"/v2/{repo}/blobs/{digest}")
        response = conn.getresponse()
        if response.status != 200:
            sys.exit(f"bench: GET blob {digest}: HTTP {response.status}")
        buffer = bytearray(CHUNK)
        with dest.open("wb") as out:
            while n := response.readinto(buffer):
                out.write(memoryview(buffer)[:n])
    finally:
        conn.close()


def run_floor(v: Variant, host: str, scratch: Path) -> Run:
    """Fetch the blobs over HTTP, then ``gzip -dc | tar -x`` each layer in turn (decrypting in Python first)."""
    repo = v.ref.split("/", 1)[1].rsplit(":", 1)[0]
    rootfs = scratch / "rootfs"
    rootfs.mkdir()
    ciphers: list[tuple[bytes, bytes, bytes, str]] = []
    if v.priv is not None:  # key unwrapping is setup, not per-byte work: before the clock
        unwrappers = decryption_unwrappers([str(v.priv)], KeyContext())
        for d in v.layers:
            desc = Descriptor.from_json(d)
            unwrapped = unwrap_layer_key(desc, unwrappers)
            options = unwrapped.options
            ciphers.append((options.symkey, options.nonce, public_options(desc).hmac, d["digest"]))
    blobs = [scratch / f"blob{i}" for i in range(len(v.layers))]
    rss = 0
    os.sync()
    start = time.perf_counter()
    fetch_start = start
    for d, blob in zip(v.layers, blobs, strict=True):
        _fetch_blob(host, repo, d["digest"], blob)
    fetched = time.perf_counter() - fetch_start
    shell = f"gzip -dc | tar -x -C {shlex.quote(str(rootfs))}"
    for i, blob in enumerate(blobs):
        log = scratch / f"floor{i}.log"
        if not ciphers:
            with blob.open("rb") as src:
                proc = launch(["sh", "-c", shell], log, stdin=src)
        else:
            proc = launch(["sh", "-c", shell], log, stdin=subprocess.PIPE)
            assert proc.stdin is not None  # stdin=PIPE
            symkey, nonce, mac, digest = ciphers[i]
            decryptor = CtrHmacDecryptor(symkey, nonce, mac, f"layer {digest}")
            buffer = bytearray(CHUNK)
            with blob.open("rb", buffering=0) as src:
                while n := src.readinto(buffer):
                    proc.stdin.write(decryptor.update(memoryview(buffer)[:n]))
            decryptor.finalize()
            proc.stdin.close()
        rss = max(rss, finish(proc, log, f"floor `{shell}` < {blob}").max_rss_kib)
    seconds = time.perf_counter() - start
    return Run(seconds, rss, f"fetch {fetched:.2f} s + gzip|tar {seconds - fetched:.2f} s")


def rootfs_listing(rootfs: Path) -> dict[str, tuple[str, int, int]]:
    """path -> (type, mode, size) for a quick sanity comparison of two unpacked trees."""
    out: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = "l" if os.path.islink(path) else "d" if os.path.isdir(path) else "f"
            out[os.path.relpath(path, rootfs)] = (kind, st.st_mode & 0o7777, st.st_size if kind == "f" else 0)
    return out


def pressure() -> str:
    """The kernel's CPU and I/O pressure (PSI, share of the last 60 s some task stalled), if available."""
    parts = []
    for kind in ("cpu", "io"):
        try:
            line = Path(f"/proc/pressure/{kind}").read_text().splitlines()[0]
        except (OSError, IndexError):
            continue
        fields = dict(f.split("=") for f in line.split()[1:])
        parts.append(f"{kind} {float(fields['avg60']):.0f}%")
    return "stall " + ", ".join(parts) if parts else "no PSI"


def create_probe(directory: Path, count: int = 4000) -> float:
    """Microseconds per empty-file create (``openat(O_CREAT|O_EXCL)``) in ``directory`` right now.

    Every contestant creates one file per archive entry (cocoguest twice with the copy snapshotter: the
    store and the bundle), so this explains much of the run-to-run variance on a shared disk.
    """
    probe = directory / "create-probe"
    probe.mkdir()
    os.sync()
    start = time.perf_counter()
    for d in range(count // FILES_PER_DIR):
        sub = probe / f"d{d}"
        sub.mkdir()
        fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(FILES_PER_DIR):
                os.close(os.open(f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
        finally:
            os.close(fd)
    seconds = time.perf_counter() - start
    shutil.rmtree(probe)
    return seconds / count * 1e6


# --- main --------------------------------------------------------------------------------------------------


def measure(v: Variant, host: str, cocoguest: Path, work: Path, repeat: int) -> dict[str, Run]:
    """Best-of-``repeat`` runs of the three contestants on ``v``, interleaved; RSS is the max over runs."""
    runs: dict[str, list[Run]] = {"cocoguest": [], "skopeo+umoci": [], "floor": []}
    for r in range(repeat):
        contestants: list[tuple[str, Callable[[Path], Run]]] = [
            ("cocoguest", lambda s: run_cocoguest(cocoguest, v, s)),
            ("skopeo+umoci", lambda s: run_skopeo_umoci(v, s)),
            ("floor", lambda s: run_floor(v, host, s)),
        ]
        for name, go in contestants:
            scratch = work / "runs" / v.name / name.replace("+", "-")
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            result = go(scratch)
            runs[name].append(result)
            print(f"  {v.name:9} run {r + 1}/{repeat} {name:12} {result.seconds:7.2f} s  {result.parts}", flush=True)
        if r == 0:
            ours = rootfs_listing(work / "runs" / v.name / "cocoguest" / "bundle" / "rootfs")
            theirs = rootfs_listing(work / "runs" / v.name / "skopeo-umoci" / "bundle" / "rootfs")
            differ = len(set(ours.items()) ^ set(theirs.items()))
            same = "identical" if ours == theirs else f"DIFFERENT ({differ} entries)"
            print(f"  {v.name:9} rootfs listing (path, type, mode, size) cocoguest vs umoci: {same}; "
                  f"{len(ours)} entries")  # fmt: skip
    for scratch in (work / "runs" / v.name).iterdir():
        shutil.rmtree(scratch, ignore_errors=True)
    best: dict[str, Run] = {}
    for name, rs in runs.items():
        fastest = min(rs, key=lambda x: x.seconds)
        best[name] = Run(fastest.seconds, max(x.max_rss_kib for x in rs), fastest.parts)
    return best


def print_table(results: list[tuple[Variant, dict[str, Run]]], repeat: int) -> None:
    print()
    print(f"Best of {repeat}; MB/s = compressed registry bytes / wall time; RSS = peak of the child process(es).")
    print("floor = HTTP fetch of the blobs, then `gzip -dc BLOB | tar -x` per layer, sequential (naive shell);")
    print("        encrypted: + AES-CTR+HMAC decrypt in Python feeding gzip. Its RSS: the largest sh+gzip+tar.")
    header = (
        f"{'image':10} {'contestant':13} {'wall s':>7} {'MB/s':>6} {'vs skopeo+umoci':>16} {'vs floor':>9}"
        f" {'peak RSS MiB':>13}"
    )
    print(header)
    print("-" * len(header))
    for v, best in results:
        cg, sk, floor = best["cocoguest"], best["skopeo+umoci"], best["floor"]
        for name, run in best.items():
            ratio_sk = f"{run.seconds / sk.seconds:.2f}x"
            ratio_fl = f"{run.seconds / floor.seconds:.2f}x"
            rss = f"{run.max_rss_kib / 1024:.1f}" if run.max_rss_kib else "-"
            print(f"{v.name:10} {name:13} {run.seconds:7.2f} {_mb_s(v.compressed, run.seconds):6.0f} "
                  f"{ratio_sk:>16} {ratio_fl:>9} {rss:>13}")  # fmt: skip
        print(f"{'':10} {'':13} targets: cocoguest <= 0.50x skopeo+umoci (now {cg.seconds / sk.seconds:.2f}x), "
              f"<= 1.30x floor (now {cg.seconds / floor.seconds:.2f}x), RSS <= 100 MB "
              f"(now {cg.max_rss_kib * 1024 / MB:.0f} MB)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=200, help="compressed image size in MB (default 200)")
    parser.add_argument("--layers", type=int, default=4, help="number of layers (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="content seed (default 1)")
    parser.add_argument("--only", choices=("plain", "encrypted"), help="measure one image only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the image cache is kept anyway)")
    args = parser.parse_args(argv)
    cocoguest = Path(sys.executable).parent / "cocoguest"
    for tool in ("skopeo", "umoci", "gzip", "tar", "openssl"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed")
    base = Path(os.environ.get("TMPDIR") or "/var/tmp")
    load = os.getloadavg()[0]
    print(f"bench: {args.size_mb} MB, {args.layers} layers; cpus {os.cpu_count()}, load {load:.2f}, {pressure()}")
    images = cached_images(base, args.size_mb * MB, args.layers, args.seed, cocoguest)
    print(f"bench: {images.tar_bytes / MB:.0f} MB of tar, {images.files} regular files (plus dirs, symlinks)")
    work = Path(tempfile.mkdtemp(prefix="cocoguest-bench-pull-", dir=base))
    try:
        with registry(work / "registry") as host:
            variants = []
            for name, layout, priv in (("plain", images.plain, None), ("encrypted", images.encrypted, images.priv)):
                if args.only not in (None, name):
                    continue
                ref = f"{host}/bench/{name}:{TAG}"
                start = time.perf_counter()
                push(layout, ref)
                print(f"bench: pushed {ref} in {time.perf_counter() - start:.1f} s")
                variants.append(Variant(name, ref, layer_descriptors(layout), priv))
            for v in variants:
                sizes = ", ".join(f"{int(d['size']) / MB:.0f}" for d in v.layers)
                print(f"bench: {v.name}: {len(v.layers)} layers of {sizes} MB = {v.compressed / MB:.0f} MB")
            before = create_probe(work)
            results = [(v, measure(v, host, cocoguest, work, args.repeat)) for v in variants]
            after = create_probe(work)
        print_table(results, args.repeat)
        print(f"Machine: load {os.getloadavg()[0]:.2f}, {pressure()}; file create in {work.parent}: "
              f"{before:.0f} us before, {after:.0f} us after the runs")  # fmt: skip
    finally:
        if args.keep:
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
