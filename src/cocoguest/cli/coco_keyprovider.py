"""The ``coco-keyprovider`` binary: the host-side ocicrypt key provider (guest-components.md §7.4).

Flags (upstream's)::

    coco-keyprovider -s/--socket HOST:PORT [--kbs URL] [-a/--auth-private-key PEM] [-d/--daemon]

Serves ``keyprovider.KeyProviderService`` over plaintext gRPC on ``HOST:PORT`` (port 0 picks a free one; the
bound address is printed on stderr as ``coco-keyprovider listening on HOST:PORT``). With ``--kbs`` every KEK
it makes or reads is registered in that KBS (admin API, Ed25519 Bearer JWT when ``-a`` is given) before the
AnnotationPacket is returned. ``-d`` detaches and writes ``coco_keyprovider.{out,err,pid}`` under
``--run-dir`` (default ``/run/confidential-containers``, upstream's fixed directory).

Invariants:
    * SECURITY: layer keys travel in plaintext gRPC; a ``--socket`` host that is not loopback is allowed (skopeo
      may run elsewhere) but logged as a warning.
    * SIGTERM and SIGINT stop the server; calls in flight get ``Limits.keyprovider_server_grace_s``; exit 0.
    * Any :class:`CocoError` ends the process with status 1 and one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import click

from cocoguest.cli.main import run_command
from cocoguest.cli.settings import environment, limits_from_env
from cocoguest.crypto.jws import load_ed25519_private_pem
from cocoguest.devkbs.config import parse_socket
from cocoguest.errors import ConfigError
from cocoguest.keyprovider.kek_store import KbsKekStore
from cocoguest.keyprovider.wrap import KeyWrapper
from cocoguest.limits import Limits
from cocoguest.rpc.services.keyprovider_service import start_keyprovider_server

_logger = logging.getLogger("cocoguest.coco_keyprovider")

DEFAULT_RUN_DIR: Final = Path("/run/confidential-containers")
_DAEMON_NAME: Final = "coco_keyprovider"


def _read_admin_key(path: Path, limits: Limits) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_key_file_bytes + 1)
    except OSError as e:
        msg = f"--auth-private-key {path}: {e.strerror}"
        raise ConfigError(msg) from e
    if len(data) > limits.max_key_file_bytes:
        msg = f"--auth-private-key {path}: larger than {limits.max_key_file_bytes} bytes"
        raise ConfigError(msg)
    return data


def _check_socket(socket: str) -> str:
    host, port = parse_socket(socket, "--socket")
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local:
        # SECURITY: WrapKey requests carry layer keys in plaintext.
        _logger.warning("coco-keyprovider: serving plaintext gRPC on non-loopback %s", host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _daemonize(run_dir: Path) -> None:
    """Detach (fork, setsid); the child's stdout/stderr go to ``run_dir``; the parent exits 0."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    for stream, suffix in ((sys.stdout, "out"), (sys.stderr, "err")):
        fd = os.open(run_dir / f"{_DAEMON_NAME}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    (run_dir / f"{_DAEMON_NAME}.pid").write_text(f"{os.getpid()}\n")


def serve(address: str, wrapper: KeyWrapper, limits: Limits, stop: threading.Event) -> None:
    """Serve ``wrapper`` on ``address`` until ``stop`` is set, then stop gracefully.

    Raises:
        TransportError: the address cannot be bound.
    """
    server, port = start_keyprovider_server(address, wrapper, limits)
    host = address.rsplit(":", 1)[0]
    click.echo(f"coco-keyprovider listening on {host}:{port}", err=True)
    try:
        stop.wait()
    finally:
        server.stop(limits.keyprovider_server_grace_s).wait()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-s", "--socket", "socket", required=True, help="HOST:PORT to serve gRPC on (port 0: any free port).")
@click.option("--kbs", "kbs_url", default=None, help="KBS URL: every KEK is registered there (admin API).")
@click.option(
    "-a",
    "--auth-private-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Ed25519 PKCS#8 PEM signing the KBS admin token.",
)
@click.option("--kbs-cert-file", type=click.Path(path_type=Path, dir_okay=False), help="KBS CA certificate (PEM).")
@click.option("-d", "--daemon", is_flag=True, help="Detach; write coco_keyprovider.{out,err,pid} to --run-dir.")
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_RUN_DIR, show_default=True)
def command(
    socket: str,
    kbs_url: str | None,
    auth_private_key: Path | None,
    kbs_cert_file: Path | None,
    daemon: bool,
    run_dir: Path,
) -> None:
    """Host-side key provider: wraps image layer keys under KEKs kept in a KBS (skopeo/cocoguest copy)."""
    limits = limits_from_env(environment())
    address = _check_socket(socket)
    if auth_private_key is not None and kbs_url is None:
        msg = "--auth-private-key needs --kbs"
        raise ConfigError(msg)
    store = None
    if kbs_url is not None:
        key = None
        if auth_private_key is not None:
            key = load_ed25519_private_pem(_read_admin_key(auth_private_key, limits), str(auth_private_key))
        cert = None if kbs_cert_file is None else str(kbs_cert_file)
        store = KbsKekStore(kbs_url, auth_key=key, ca_cert=cert, limits=limits)
    if daemon:
        _daemonize(run_dir)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    try:
        serve(address, KeyWrapper(store, limits), limits, stop)
    finally:
        if store is not None:
            store.close()
    _logger.info("coco-keyprovider: stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the binary; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_command(command, argv, "coco-keyprovider")


def entry_point() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
