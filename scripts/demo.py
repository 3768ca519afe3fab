"""The cocoguest demo: the Confidential Containers key flow on one machine, all on loopback (issue 10).

Run by ``make demo``. Steps (each a small function, so more processes can be added later):

1. start the dev KBS (generated Ed25519 admin key, temp directories, admin auth on);
2. start a docker-registry on a free port;
3. build a small image from demo/layers/;
4. start coco-keyprovider and encrypt the image through it (``cocoguest copy --encryption-key
   provider:attestation-agent:...``): the KEK goes into the KBS, never to the registry;
5. sign it with a generated cosign-style key (sigstore attachments);
6. store the signature policy, the public key and the sigstore config in the KBS;
7. pull it as the guest: sample attestation, policy and keys from the KBS; show the bundle;
8. store a workload secret in the KBS;
9. start the three guest services as separate processes (scripts/demo_guest.py): attestation-agent,
   confidential-data-hub and api-server-rest, each waited for until it answers;
10. the workload: ``curl`` the secret through api-server-rest (CDH -> AA token -> KBS) and its KBS token;
11. kata-agent's image pull: PullImage on the CDH's ttrpc socket (``cocoguest cdh pull-image``, the upstream
    cdh-tool's verb); the CDH takes the signature policy, sigstore config and registries.conf from the KBS
    (its ``[image]`` section), the KEK through the AA's token, and measures the pull through the AA.

Everything lives in a temporary directory that is removed at the end, and every process started is stopped,
also on failure, Ctrl-C or SIGTERM (turned into ``SystemExit`` so every ``finally`` runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from demo_guest import ImageSettings, api_server_rest, attestation_agent, confidential_data_hub

from cocoguest.devkbs.admin_client import KbsAdminClient
from cocoguest.devkbs.config import DevKbsConfig
from cocoguest.devkbs.server import DevKbsServer, running
from cocoguest.image.build import build_layout

ROOT = Path(__file__).resolve().parent.parent
KEK_ID = "default/image-kek/demo"
POLICY_ID = "default/security-policy/demo"
COSIGN_KEY_ID = "default/cosign-public-key/demo"
SIGSTORE_CONFIG_ID = "default/sigstore-config/demo"
REGISTRIES_CONF_ID = "default/registry-configuration/demo"
WORKLOAD_RESOURCE_ID = "default/workload-secret/demo"
SECRET = b"correct horse battery staple (from the dev KBS)"
ALLOW_ALL = (ROOT / "src/cocoguest/devkbs/policies/allow_all.rego").read_text()


def step(text: str) -> None:
    print(f"\n== {text}")


def cocoguest(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the cocoguest CLI; show a short form of the command; return its stdout."""
    print("   $ cocoguest " + " ".join(a if len(a) < 70 else a[:67] + "..." for a in args))
    command = [sys.executable, "-m", "cocoguest", *args]
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        result.check_returncode()
    if "SAMPLE attester" in result.stderr:  # the warnings about the loopback registry's plain HTTP are left out
        print("   (warning: no TEE here, the SAMPLE attester was used as allowed: its evidence proves nothing)")
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pem_private(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_public(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@contextlib.contextmanager
def start_kbs(work: Path) -> Iterator[tuple[DevKbsServer, KbsAdminClient, Path]]:
    """Step 1: the dev KBS on a free loopback port, with a fresh admin key and the allow-all resource policy."""
    step("1. dev KBS")
    admin_key = ed25519.Ed25519PrivateKey.generate()
    (work / "admin.pub").write_bytes(pem_public(admin_key))
    (work / "admin.key").write_bytes(pem_private(admin_key))
    kbs_dir = work / "kbs"
    config = DevKbsConfig(sockets=(("127.0.0.1", 0),), insecure_http=True, auth_public_key=work / "admin.pub",
                          resource_dir=kbs_dir / "repository", policy_path=kbs_dir / "policy.rego")  # fmt: skip
    with running(config) as server:
        admin = KbsAdminClient(server.url, auth_key=admin_key)
        admin.set_resource_policy(ALLOW_ALL)
        print(f"   listening on {server.url}; admin API signed with a generated Ed25519 key")
        try:
            yield server, admin, work / "admin.key"
        finally:
            admin.close()


@contextlib.contextmanager
def start_registry(work: Path) -> Iterator[str]:
    """Step 2: Debian's docker-registry on a free loopback port."""
    step("2. registry")
    host = f"127.0.0.1:{free_port()}"
    config = {"version": 0.1, "log": {"level": "error"}, "http": {"addr": host},
              "storage": {"filesystem": {"rootdirectory": str(work / "registry")}}}  # fmt: skip
    (work / "registry.yml").write_text(json.dumps(config))
    log = (work / "registry.log").open("wb")
    process = subprocess.Popen(["docker-registry", "serve", str(work / "registry.yml")], stdout=log, stderr=log)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
                break
            time.sleep(0.05)
        print(f"   docker-registry at {host}")
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def build_image(work: Path) -> Path:
    """Step 3: a 2-layer image from demo/layers/."""
    step("3. build a 2-layer image from demo/layers/")
    layout = work / "plain"
    digest = build_layout(layout, sorted((ROOT / "demo" / "layers").iterdir()))
    print(f"   oci:{layout.name}:latest  manifest {digest[:19]}...")
    return layout


@contextlib.contextmanager
def start_keyprovider(kbs_url: str, admin_key: Path, work: Path) -> Iterator[Path]:
    """coco-keyprovider on a free port; yields an ocicrypt keyprovider config naming it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cocoguest.cli.coco_keyprovider", "-s", f"127.0.0.1:{port}",
                                "--kbs", kbs_url, "-a", str(admin_key)], stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for line in process.stderr or ():
            if "listening on" in line:
                break
        print(f"   coco-keyprovider on 127.0.0.1:{port}, registering KEKs in {kbs_url}")
        config = work / "ocicrypt.conf"
        config.write_text(json.dumps({"key-providers": {"attestation-agent": {"grpc": f"127.0.0.1:{port}"}}}))
        yield config
    finally:
        process.terminate()
        process.wait(timeout=10)


def encrypt_and_sign(plain: Path, ref: str, config: Path, work: Path) -> Path:
    """Steps 4 and 5: encrypt through coco-keyprovider and sign with a cosign-style key, pushing to ``ref``."""
    step("4+5. encrypt through coco-keyprovider (KEK into the KBS) and sign (cosign-style key)")
    key = ec.generate_private_key(ec.SECP256R1())
    (work / "cosign.key").write_bytes(pem_private(key))
    (work / "cosign.pub").write_bytes(pem_public(key))
    env = {**os.environ, "OCICRYPT_KEYPROVIDER_CONFIG": str(config)}
    cocoguest("copy", "-q", "--dest-tls-verify=false", "--encryption-key",
              f"provider:attestation-agent:keyid=kbs:///{KEK_ID}::algorithm=A256GCM",
              "--sign-by-sigstore-private-key", str(work / "cosign.key"), f"oci:{plain}:latest", f"docker://{ref}",
              env=env)  # fmt: skip
    print(f"   pushed docker://{ref}: every layer encrypted, layer keys wrapped under kbs:///{KEK_ID}")
    return work / "cosign.pub"


def store_policy(admin: KbsAdminClient, registry: str, public_key: Path) -> None:
    """Step 6: the signature policy, its public key and the sigstore config, as KBS resources."""
    step("6. signature policy into the KBS")
    requirement = {"type": "sigstoreSigned", "keyPath": f"kbs:///{COSIGN_KEY_ID}"}
    policy = {"default": [{"type": "reject"}], "transports": {"docker": {f"{registry}/demo": [requirement]}}}
    admin.set_resource(POLICY_ID, json.dumps(policy).encode())
    admin.set_resource(COSIGN_KEY_ID, public_key.read_bytes())
    sigstore = f"docker:\n  {registry}/demo:\n    use-sigstore-attachments: true\n"
    admin.set_resource(SIGSTORE_CONFIG_ID, sigstore.encode())
    print(f"   kbs:///{POLICY_ID}: reject all but {registry}/demo signed by the demo cosign key")
    # The CDH's pulls read registries.conf (image-rs's registry_configuration_uri): the loopback registry is
    # plain HTTP, as `--tls-verify=false` says for the CLI pull.
    admin.set_resource(REGISTRIES_CONF_ID, f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n'.encode())
    print(f"   kbs:///{REGISTRIES_CONF_ID}: registries.conf for the CDH ({registry} is plain HTTP)")


def guest_pull(kbs_url: str, ref: str, work: Path) -> Path:
    """Step 7: the guest pull: attest (sample), fetch policy and KEKs from the KBS, verify, decrypt, unpack."""
    step("7. guest pull (sample attestation; policy, keys and KEK from the KBS)")
    bundle = work / "bundle"
    cocoguest("pull", "-q", "--snapshotter", "copy", "--work-dir", str(work / "store"), "--tls-verify=false",
              "--aa-kbc-params", f"cc_kbc::{kbs_url}", "--allow-sample-attester", "--policy", f"kbs:///{POLICY_ID}",
              "--registries-d", f"kbs:///{SIGSTORE_CONFIG_ID}", f"docker://{ref}", str(bundle))  # fmt: skip
    return bundle


def show_bundle(bundle: Path) -> bool:
    """Print the bundle's process args, rootfs files and motd; whether the motd is the image's."""
    config = json.loads((bundle / "config.json").read_text())
    rootfs = bundle / "rootfs"
    files = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if p.is_file())
    print(f"   bundle: config.json process.args {config['process']['args']}; rootfs files: {', '.join(files)}")
    motd = (rootfs / "etc" / "motd").read_text()
    print(f"   etc/motd: {motd.splitlines()[0]}")
    return motd == (ROOT / "demo/layers/0-base/etc/motd").read_text()


def store_secret(admin: KbsAdminClient) -> None:
    """Step 8: the workload's secret, as a KBS resource (admin API)."""
    step("8. a workload secret into the KBS")
    admin.set_resource(WORKLOAD_RESOURCE_ID, SECRET)
    print(f"   kbs:///{WORKLOAD_RESOURCE_ID} ({len(SECRET)} bytes)")


def http_get(url: str) -> bytes:
    """``curl -s --fail-with-body URL`` (Debian curl); urllib only when curl is not installed, saying so."""
    curl = shutil.which("curl")
    if curl is None:
        print(f"   (curl is not installed: fetching with Python's urllib instead)\n   GET {url}")
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (our loopback http:// URL)
            return bytes(response.read())
    print(f"   $ curl -s --fail-with-body {url}")
    result = subprocess.run([curl, "-s", "--fail-with-body", url], capture_output=True, check=False, timeout=60)
    if result.returncode != 0:
        msg = f"curl {url} failed (status {result.returncode}): {result.stdout[:300]!r}"
        raise RuntimeError(msg)
    return result.stdout


def shorten(text: str, keep: int = 24) -> str:
    return text if len(text) <= 2 * keep + 3 else f"{text[:keep]}...{text[-keep:]} ({len(text)} chars)"


def workload(asr_url: str) -> bool:
    """Step 10: what a workload does: fetch its secret and the AA's KBS token over loopback HTTP."""
    step("10. the workload: curl through api-server-rest (CDH -> AA token -> KBS)")
    secret = http_get(f"{asr_url}/cdh/resource/{WORKLOAD_RESOURCE_ID}")
    print(f"   secret: {secret.decode(errors='replace')}")
    document = json.loads(http_get(f"{asr_url}/aa/token?token_type=kbs"))
    print(f"   token: {shorten(document['token'])}")
    print(f"   tee_keypair: a PEM private key ({len(document['tee_keypair'])} chars, not shown)")
    return secret == SECRET


def kata_agent_pull(cdh_address: str, ref: str, work: Path) -> bool:
    """Step 11: what kata-agent does for a container image: PullImage on the CDH's socket."""
    step("11. kata-agent's image pull: PullImage through the CDH (policy, signatures, KEK from the KBS)")
    bundle = work / "cdh-bundle"
    digest = cocoguest("cdh", "-s", cdh_address, "pull-image", "--image-url", ref, "--bundle-path", str(bundle))
    print(f"   manifest digest {digest.strip()} (the CDH then asked the AA to measure the pull: the sample")
    print("   attester has no register to extend, so that is NOT_SUPPORTED here; on a TEE it is an AAEL event)")
    try:
        return show_bundle(bundle)
    finally:
        # As root the CDH's snapshotter mounts an overlay at rootfs: the container runtime's to unmount.
        if os.path.ismount(bundle / "rootfs"):
            subprocess.run(["umount", str(bundle / "rootfs")], check=False, timeout=60)


def guest_services_and_workload(kbs_url: str, ref: str, work: Path) -> bool:
    """Step 9 (the three services, stopped when this returns or raises), step 10 and step 11."""
    step("9. guest services as separate processes: attestation-agent, confidential-data-hub, api-server-rest")
    image = ImageSettings(
        policy_uri=f"kbs:///{POLICY_ID}",
        sigstore_config_uri=f"kbs:///{SIGSTORE_CONFIG_ID}",
        registry_configuration_uri=f"kbs:///{REGISTRIES_CONF_ID}",
    )
    with (
        attestation_agent(work, kbs_url) as aa,
        confidential_data_hub(work, kbs_url, aa.address, image) as cdh,
        api_server_rest(work, free_port(), aa.address, cdh.address) as asr,
    ):
        print("   (the AA uses the SAMPLE attester, explicitly allowed: no TEE here, its evidence proves nothing)")
        fetched = workload(asr.address)
        pulled = kata_agent_pull(cdh.address, ref, work)
    print("   attestation-agent, confidential-data-hub and api-server-rest stopped")
    return fetched and pulled


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    sys.exit(128 + signum)  # SystemExit: every finally runs, every process is stopped


def main() -> int:
    """Run every step; clean up whatever happens."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="cocoguest-demo-") as tmp:
        work = Path(tmp)
        with start_kbs(work) as (kbs, admin, admin_key), start_registry(work) as registry:
            plain = build_image(work)
            ref = f"{registry}/demo/app:v1"
            with start_keyprovider(kbs.url, admin_key, work) as config:
                public_key = encrypt_and_sign(plain, ref, config, work)
            store_policy(admin, registry, public_key)
            pulled = show_bundle(guest_pull(kbs.url, ref, work))
            store_secret(admin)
            fetched = guest_services_and_workload(kbs.url, ref, work)
    ok = pulled and fetched
    print("\ndemo " + ("succeeded" if ok else "FAILED") + "; every process stopped, temporary files removed")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ndemo interrupted; every process stopped, temporary files removed", file=sys.stderr)
        sys.exit(130)
