"""The one place that turns a pull configuration into a pull: ``cocoguest pull`` calls it, and so does the CDH.

The caller gathers the settings (the CLI from flags and the environment, the CDH from its ``[image]`` section);
this module builds from them the policy evaluator, the key unwrappers and the pull options, opens the source and
runs the pull.

Invariants:
    * No policy configured is an error unless the caller set ``insecure_accept_anything`` explicitly
      (DESIGN.md §3); the insecure evaluator warns on every use.
    * Nothing here reads ``os.environ``: the environment, where needed (proxies, GnuPG), comes in the config.
    * The source is closed when the pull ends, whatever the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cocoguest.errors import ConfigError
from cocoguest.image.platform import PlatformSpec
from cocoguest.image.pull import LayerProgress, PullOptions, PullResult, pull_image
from cocoguest.image.sources import open_source
from cocoguest.kbs.locations import LocationReader
from cocoguest.kbs.provider import ResourceProvider
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.keyspecs import KeyContext
from cocoguest.ocicrypt.keywrap import KeyUnwrapper
from cocoguest.registry.access import RegistryAccess
from cocoguest.signature.request import InsecureAcceptAnything, PolicyEvaluator


@dataclass(frozen=True)
class PolicySettings:
    """Where the signature policy and its companions are (paths, ``file://`` or ``kbs:///`` locations)."""

    policy: str | None = None
    """containers-policy.json; ``None`` is refused unless ``insecure_accept_anything``."""
    registries_d: str | None = None
    """A registries.d directory, or one sigstore config document at a ``kbs:///`` location."""
    insecure_accept_anything: bool = False
    """Accept every image without verification (warns on every use)."""
    resources: ResourceProvider | None = None
    """Serves ``kbs:///`` locations (offline_fs files today, the KBS once attested)."""


@dataclass(frozen=True)
class PullConfig:
    """Everything that configures pulls, whoever gathered it."""

    work_dir: Path
    policy: PolicySettings
    access: RegistryAccess = field(default_factory=RegistryAccess)
    decryption_keys: Sequence[str] = ()
    """Key specs as for ``--decryption-key`` (``FILE[:pass=..]``, ``provider:NAME[:PARAMS]``, ...)."""
    key_context: KeyContext | None = None
    """Key providers, PKCS#11 policy, GnuPG home; ``None`` with no decryption keys loads no key code."""
    unwrappers: Sequence[KeyUnwrapper] = ()
    """Ready-made unwrappers (the native attestation-agent provider over a KBC), tried before the key specs'."""
    platform: PlatformSpec = field(default_factory=PlatformSpec.running)
    max_concurrent: int = 3
    snapshotter: Literal["overlay", "copy", "auto"] = "auto"
    require_encryption: bool = False
    env: Mapping[str, str] | None = None
    """The environment for signature lookups (proxies); ``None`` is none."""
    limits: Limits = DEFAULT_LIMITS


def policy_evaluator(settings: PolicySettings, env: Mapping[str, str] | None, limits: Limits) -> PolicyEvaluator:
    """The policy step: containers-policy.json, or the explicit insecure accept-anything.

    Raises:
        ConfigError: both or neither of a policy and the insecure switch; a malformed policy or registries.d.
        ResourceNotFoundError, TransportError: a location cannot be read.
    """
    if settings.insecure_accept_anything:
        if settings.policy is not None:
            msg = "an insecure accept-anything policy and a policy file exclude each other"
            raise ConfigError(msg)
        return InsecureAcceptAnything()
    if settings.policy is None:
        # SECURITY: no policy configured is an error, never an implicit accept-anything.
        msg = "no signature policy configured"
        raise ConfigError(msg)
    # Imported here: signature verification pulls in OpenPGP, sigstore and X.509 code a plain pull does not need.
    from cocoguest.signature.gate import PolicyGate, load_policy, load_registries_d  # noqa: PLC0415

    is_path = "://" not in settings.policy
    base_dir = Path(settings.policy).resolve().parent if is_path else Path.cwd()
    resources = LocationReader(base_dir, settings.resources, limits=limits)
    return PolicyGate(
        load_policy(settings.policy, resources, limits=limits),
        resources,
        load_registries_d(settings.registries_d, resources, limits=limits),
        env=env,
        limits=limits,
    )


def key_unwrappers(decryption_keys: Sequence[str], context: KeyContext | None) -> list[KeyUnwrapper]:
    """Unwrappers for encrypted layers; none (and no key code loaded) without keys or key providers.

    Raises:
        ConfigError: a malformed key spec or an unreadable key.
    """
    if not decryption_keys and (context is None or not context.key_providers):
        return []
    from cocoguest.ocicrypt import keyspecs  # noqa: PLC0415  (key formats are only needed for keys)

    return keyspecs.decryption_unwrappers(keyspecs.split_specs(decryption_keys), context or KeyContext())


def pull_options(config: PullConfig) -> PullOptions:
    """The options of :func:`~cocoguest.image.pull.pull_image` for ``config`` (reads the policy and keys)."""
    unwrappers = [*config.unwrappers, *key_unwrappers(config.decryption_keys, config.key_context)]
    return PullOptions(
        work_dir=config.work_dir,
        policy=policy_evaluator(config.policy, config.env, config.limits),
        unwrappers=unwrappers,
        platform=config.platform,
        max_concurrent=config.max_concurrent,
        snapshotter=config.snapshotter,
        require_encryption=config.require_encryption,
        limits=config.limits,
    )


def pull(config: PullConfig, image: str, bundle: Path, progress: LayerProgress | None = None) -> PullResult:
    """Pull ``image`` (``docker://...``, a bare registry reference, or ``oci:PATH[:REF]``) into ``bundle``.

    Raises:
        CocoError: any failure (see :func:`~cocoguest.image.pull.pull_image`); nothing half-written is left.
    """
    options = pull_options(config)
    opened = open_source(image, config.access)
    try:
        return pull_image(opened, bundle, options, progress)
    finally:
        opened.source.close()
