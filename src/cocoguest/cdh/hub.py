"""The CDH core (guest-components.md §8.2): resources, key unwrapping, sealed secrets, image pulls.

:class:`Hub` is sync and IO-bound; the rpc layer runs each call in a worker thread. The attestation agent is
reached only through :class:`AgentPort` (GetToken ``kbs`` for cc_kbc, ExtendRuntimeMeasurement after pulls),
which the rpc layer implements over the AA's ttrpc socket; the hub never asks for evidence.

Invariants:
    * One KBC per hub, built once: with ``cc_kbc`` it is a passport-mode client whose token cache asks the AA
      for a token only when the cached one is stale or refused, so repeated calls do not re-attest.
    * SECURITY: sealed secrets are verified (ES256, key from the KBS or the local key directory) unless
      ``skip_sealed_secret_verification`` is configured; PullImage needs a policy unless the config says
      ``insecure_accept_anything``; both switches warn on every use.
    * Each pull is measured through the AA only after it succeeded; a failed pull leaves no bundle (the pull
      pipeline cleans up) and is not measured.
    * Every error is a :class:`CocoError` naming the resource, secret, packet or image at fault.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cocoguest.cdh.config import CdhConfig
from cocoguest.cdh.kms.factory import KmsContext
from cocoguest.cdh.secret.keys import SealedSecretKeys
from cocoguest.cdh.secret.unseal import unseal_secret
from cocoguest.errors import CocoError, ConfigError, TransportError
from cocoguest.fileio import write_atomically
from cocoguest.image.configured_pull import PolicySettings, PullConfig, pull
from cocoguest.kbs.client import PassportKbsClient, credentials_from_aa_json
from cocoguest.kbs.kbc.base import Kbc
from cocoguest.kbs.kbc.cc_kbc import CcKbc
from cocoguest.kbs.kbc.factory import build_kbc
from cocoguest.kbs.kbc.layer_unwrapper import KbcLayerKeyUnwrapper
from cocoguest.kbs.key_unwrap import unwrap_key
from cocoguest.kbs.locations import LocationReader
from cocoguest.kbs.offline_fs import DEFAULT_PATHS
from cocoguest.kbs.resource_uri import ResourceUri
from cocoguest.kbs.token_cache import Credentials
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.keyprovider.protocol import build_unwrap_response, parse_request
from cocoguest.registry.access import RegistryAccess
from cocoguest.registry.config.registries_conf import RegistriesConfig

_logger = logging.getLogger(__name__)

MEASUREMENT_DOMAIN: Final = "github.com/confidential-containers"
MEASUREMENT_OPERATION: Final = "PullImage"


class AgentPort(Protocol):
    """What the CDH needs from the attestation agent (blocking calls; the rpc layer implements them)."""

    def get_token(self, token_type: str) -> bytes:
        """GetToken: for ``kbs``, the ``{"token","tee_keypair"}`` JSON."""
        ...

    def extend_runtime_measurement(self, domain: str, operation: str, content: str) -> str:
        """ExtendRuntimeMeasurement: the result name (``OK``, ``NOT_SUPPORTED``, ``NOT_ENABLED``)."""
        ...


class AaTokenProvider:
    """Passport-mode credentials from the AA's ``GetToken("kbs")`` (counts the calls, for tests and logs)."""

    def __init__(self, agent: AgentPort, source: str, limits: Limits = DEFAULT_LIMITS) -> None:
        """Ask ``agent`` (at ``source``, for messages)."""
        self._agent = agent
        self._source = source
        self._limits = limits
        self.calls = 0

    def get_kbs_credentials(self) -> Credentials:
        """A token and TEE key pair from the AA."""
        self.calls += 1
        return credentials_from_aa_json(self._agent.get_token("kbs"), self._source, self._limits)


@dataclass(frozen=True)
class PulledImage:
    """A PullImage result."""

    manifest_digest: str
    measurement: str
    """The AA's answer to the measurement (``OK``, ``NOT_ENABLED``, ...)."""


def build_hub_kbc(
    config: CdhConfig,
    agent: AgentPort,
    *,
    offline_fs_paths: tuple[Path, ...] = tuple(DEFAULT_PATHS),
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[Kbc, AaTokenProvider | None]:
    """The hub's KBC: cc_kbc in passport mode through ``agent``; offline_fs or sample as configured.

    Raises:
        ConfigError: malformed KBS URL or certificate, unreadable offline_fs files.
    """
    if config.kbc.kbc_name == "cc_kbc":
        provider = AaTokenProvider(agent, f"attestation agent {config.aa_socket}", limits)
        cert = config.kbs_cert.encode("utf-8") if config.kbs_cert else None
        return CcKbc(PassportKbsClient(config.kbc.kbs_uri, provider, ca_cert_pem=cert, limits=limits)), provider
    return build_kbc(config.kbc, offline_fs_paths=offline_fs_paths, limits=limits), None


def _write_private(path: Path, data: bytes, what: str) -> Path:
    """Write ``data`` (``what``, for errors) to ``path`` owner-only, atomically (concurrent pulls may race).

    Raises:
        TransportError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # SECURITY: registry credentials are never readable by others, not even while being written.
        write_atomically(path, data, mode=0o600)
    except OSError as e:
        msg = f"{what}: cannot write {path}: {e.strerror or e}"
        raise TransportError(msg) from e
    return path


EXTRA_ROOTS_DIR_NAME: Final = ".cdh-extra-roots"
_TMP_PREFIX: Final = ".tmp-"


def write_root_certificates(directory: Path, pems: tuple[str, ...]) -> Path:
    """Make ``directory`` (mode 0700) hold exactly ``pems``, one ``<sha256 of the PEM>.crt`` file each.

    File names derive from the content, and each file is written to a unique temporary name and renamed, so
    concurrent pulls writing the same configuration do not disturb each other. Other files (left by an earlier
    configuration) are removed; so are stale temporary files older than this call's own.

    Raises:
        ConfigError: ``directory`` exists but is not a directory (e.g. a symlink), or cannot be written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode):
            msg = f"image.extra_root_certificates: {directory} is not a directory"
            raise ConfigError(msg)
        # SECURITY: only the CDH may change the roots its pulls trust.
        os.chmod(directory, 0o700)
        wanted: set[str] = set()
        for pem in pems:
            data = pem.encode("utf-8")
            name = hashlib.sha256(data).hexdigest() + ".crt"
            wanted.add(name)
            write_atomically(directory / name, data, temp_prefix=_TMP_PREFIX)
        for entry in os.listdir(directory):
            if entry not in wanted and not entry.startswith(_TMP_PREFIX):
                (directory / entry).unlink(missing_ok=True)
    except OSError as e:
        msg = f"image.extra_root_certificates: cannot write {directory}: {e.strerror or e}"
        raise ConfigError(msg) from e
    return directory


class Hub:
    """The data hub over one KBC and one AA port (see the module docstring)."""

    def __init__(
        self,
        config: CdhConfig,
        kbc: Kbc,
        agent: AgentPort,
        *,
        token_provider: AaTokenProvider | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Serve ``config`` with ``kbc``; ``agent`` is the AA (measurements)."""
        self._config = config
        self._kbc = kbc
        self._agent = agent
        self._limits = limits
        self.token_provider = token_provider
        self._kms = KmsContext(resources=kbc, local_root=config.local_kms_dir, limits=limits)
        self._keys = SealedSecretKeys(kbc, config.sealed_secret_key_dir, limits)

    @property
    def config(self) -> CdhConfig:
        """The configuration served."""
        return self._config

    def get_resource(self, uri: str) -> bytes:
        """The resource at ``uri`` (``kbs:///repo/type/tag``) through the KBC.

        Raises:
            ResourceUriError: not a resource URI. CocoError: the KBC could not release it (names it).
        """
        return self._kbc.get_resource(ResourceUri.parse(uri, limits=self._limits))

    def unwrap_key(self, untrusted_request: bytes) -> bytes:
        """The key-provider ``keyunwrap`` answer for an ocicrypt request carrying an AnnotationPacket.

        The answer is in upstream's form: ``{"keyunwrapresults":{"optsdata":[<byte values>]}}``; ``dc`` is ignored.

        Raises:
            ProtocolError: not a keyunwrap request or a malformed packet.
            CocoError: the KEK could not be obtained or does not open the packet.
        """
        request = parse_request(untrusted_request)
        if request.op != "unwrap" or not request.annotation:
            msg = "UnWrapKey: the key provider request is not a keyunwrap with an annotation"
            raise ConfigError(msg)
        optsdata = unwrap_key(request.annotation, self._kbc, self._limits)
        return build_unwrap_response(optsdata, number_array=True)

    def unseal_secret(self, untrusted_secret: bytes) -> bytes:
        """The plaintext of a ``sealed.`` secret (see :mod:`cocoguest.cdh.secret.unseal`)."""
        return unseal_secret(
            untrusted_secret,
            self._keys,
            self._kms,
            skip_verification=self._config.skip_sealed_secret_verification,
        )

    def pull_config(self) -> PullConfig:
        """The pull configuration from ``[image]`` (the KBC serves ``kbs:///`` policy and sigstore locations)."""
        image = self._config.image
        return PullConfig(
            work_dir=image.work_dir,
            policy=PolicySettings(
                policy=image.image_security_policy_uri,
                registries_d=image.sigstore_config_uri,
                insecure_accept_anything=image.insecure_accept_anything,
                resources=self._kbc,
            ),
            access=self.registry_access(),
            unwrappers=(KbcLayerKeyUnwrapper(self._kbc, self._limits),),
            max_concurrent=image.max_concurrent_layer_downloads_per_image,
            limits=self._limits,
        )

    def registry_access(self) -> RegistryAccess:
        """How pulls reach registries, from ``[image]``: registries.conf at ``registry_configuration_uri``, the
        auth file at ``authenticated_registry_credentials_uri`` (both ``kbs:///`` resources or files, read anew
        for each pull), ``image_pull_proxy`` as proxy variables, and ``extra_root_certificates`` as the flat
        certificate directory ``<work_dir>/.cdh-extra-roots`` (see :func:`write_root_certificates`): its
        ``*.crt`` files are CAs added to the system roots for every registry.

        The auth file is written to ``<work_dir>/.cdh-auth.json`` (mode 0600, replaced atomically), because the
        registry layer reads auth files by path.

        Raises:
            ConfigError: a malformed registries.conf. ResourceNotFoundError, CocoError: a location cannot be read.
        """
        image = self._config.image
        reader = LocationReader(Path("/"), self._kbc, limits=self._limits)
        registries = RegistriesConfig.from_toml("", "<defaults>")
        if image.registry_configuration_uri:
            uri = image.registry_configuration_uri
            try:
                text = reader.read(uri).decode("utf-8")
            except UnicodeDecodeError as e:
                msg = f"image.registry_configuration_uri {uri[:200]!r}: not UTF-8 text"
                raise ConfigError(msg) from e
            registries = RegistriesConfig.from_toml(text, f"registry configuration {uri[:200]}")
        auth_files: tuple[Path, ...] = ()
        if credentials_uri := image.authenticated_registry_credentials_uri:
            data = reader.read(credentials_uri)
            what = f"image.authenticated_registry_credentials_uri {credentials_uri[:200]!r}"
            auth_files = (_write_private(image.work_dir / ".cdh-auth.json", data, what),)
        env: dict[str, str] = {}
        proxy = image.image_pull_proxy
        if proxy is not None:
            for name, value in (("HTTPS_PROXY", proxy.https_proxy), ("HTTP_PROXY", proxy.http_proxy)):
                if value:
                    env[name] = value
            if proxy.no_proxy:
                env["NO_PROXY"] = proxy.no_proxy
        cert_dir = None
        if image.extra_root_certificates:
            cert_dir = write_root_certificates(image.work_dir / EXTRA_ROOTS_DIR_NAME, image.extra_root_certificates)
        return RegistryAccess(
            registries=registries, auth_files=auth_files, flat_cert_dir=cert_dir, env=env, limits=self._limits
        )

    def pull_image(self, image_url: str, bundle_path: Path) -> PulledImage:
        """Pull ``image_url`` into ``bundle_path`` (rootfs + config.json), then measure it through the AA.

        Raises:
            ConfigError: no policy configured (and no ``insecure_accept_anything``).
            CocoError: the pull failed (names the image, layer or policy); nothing is left at ``bundle_path``.
        """
        result = pull(self.pull_config(), image_url, bundle_path)
        digest = str(result.manifest_digest)
        content = json.dumps({"image": image_url, "digest": digest}, separators=(", ", ":"))
        try:
            answer = self._agent.extend_runtime_measurement(MEASUREMENT_DOMAIN, MEASUREMENT_OPERATION, content)
        except CocoError as e:
            msg = f"image {image_url}: pulled ({digest}) but the runtime measurement through the AA failed: {e}"
            raise type(e)(msg) from e
        _logger.info("PullImage %s (%s): runtime measurement through the AA: %s", image_url, digest, answer)
        return PulledImage(digest, answer)

    def fetch_credentials(self) -> list[Path]:
        """Start-up: write each ``[[credentials]]`` resource to its path (checked at load time); return them."""
        written = []
        for credential in self._config.credentials:
            data = self.get_resource(credential.resource_uri)
            written.append(_write_private(credential.path, data, f"credential {credential.resource_uri[:200]}"))
        return written
