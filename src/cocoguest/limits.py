"""Every size, count and time limit of cocoguest, in one frozen dataclass.

Invariant: no other module hard-codes a size, count or time limit; every reader of untrusted data is
capped by a field of :class:`Limits`.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits applied to untrusted input and to long work."""

    max_manifest_bytes: int = 4 * MiB
    """Manifest or index JSON (containers/image uses 4 MiB)."""
    max_config_bytes: int = 8 * MiB
    """Image config JSON."""
    max_index_json_bytes: int = 4 * MiB
    """An OCI layout's index.json."""
    max_blob_bytes: int = 64 * GiB
    """One layer blob."""
    max_layers: int = 512
    """Layers in one manifest (Docker caps at 127; we are generous but finite)."""
    max_annotation_bytes: int = 1 * MiB
    """One annotation value (wrapped keys are a few KiB)."""
    max_key_file_bytes: int = 1 * MiB
    """A key, certificate, keyring or key YAML file."""
    max_private_options_bytes: int = 64 * KiB
    """Unwrapped private-options JSON (193 bytes in practice)."""
    max_password_fd_bytes: int = 64
    """Bytes read from ``FILE:fd=N`` (as Go ocicrypt)."""
    max_key_recipients: int = 64
    """Recipients in one wrapped-key entry (JWE, PKCS7): each costs a private-key operation per key."""
    max_wrapped_keys_per_layer: int = 32
    """Comma entries of all ``org.opencontainers.image.enc.keys.*`` annotations of one layer (each encryption
    or added set of recipients writes one per scheme); more is refused before any key is tried."""
    max_wrapped_key_attempts_per_image: int = 1024
    """Entries tried (entry x scheme unwrapper) over all layers of one pull or copy: bounds the private-key
    work an image can demand (a 512-layer image with one entry per layer needs 512)."""
    max_der_depth: int = 32
    """Nesting depth of DER structures (CMS)."""
    max_der_length_octets: int = 4
    """Octets of a DER long-form length (4 = lengths under 4 GiB)."""
    max_auth_file_bytes: int = 1 * MiB
    """containers-auth.json file."""
    max_registries_conf_bytes: int = 1 * MiB
    """registries.conf file."""
    registry_connect_timeout_s: float = 30.0
    """Connecting to a registry."""
    registry_read_timeout_s: float = 60.0
    """Between two reads from a registry."""
    registry_retry_attempts: int = 5
    """Tries of one registry request (5xx, 429, resets)."""
    registry_retry_base_delay_s: float = 0.5
    """First backoff delay; doubles per try, with jitter."""
    registry_retry_max_delay_s: float = 10.0
    """Longest backoff delay."""
    registry_retry_after_cap_s: float = 30.0
    """Longest Retry-After honoured; a registry asking for longer fails the request at once."""
    registry_max_redirects: int = 5
    """Redirects followed per request."""
    registry_error_body_bytes: int = 64 * KiB
    """Error body read for the message."""
    registry_token_max_bytes: int = 1 * MiB
    """Token endpoint answer."""
    registry_blob_resumes: int = 5
    """Range resumes of one interrupted blob download."""
    registry_upload_chunk_bytes: int = 1 * MiB
    """Read size when pushing a blob."""
    registry_request_deadline_s: float = 120.0
    """Total time of one request for a small document (``/v2/`` probe, token, manifest, config, signature):
    connecting, headers and body together (a registry dripping one byte a second is cut off here)."""
    registry_blob_min_bytes_per_s: int = 1 * KiB
    """Slowest blob transfer tolerated, averaged over :attr:`registry_blob_rate_window_s`."""
    registry_blob_rate_window_s: float = 60.0
    """Window over which a blob's transfer rate is averaged (also the longest wait for its next bytes)."""
    registry_retry_budget_s: float = 60.0
    """Total seconds one registry session (one pull or copy side) may sleep in backoff and ``Retry-After``."""
    registry_default_token_lifetime_s: float = 60.0
    """Token lifetime when the server gives none (token spec)."""
    registry_token_expiry_margin_s: float = 10.0
    """Refresh tokens this long before they expire."""
    max_user_db_bytes: int = 4 * MiB
    """An image's /etc/passwd or /etc/group."""
    max_symlink_hops: int = 40
    """Symlinks followed resolving one path inside a rootfs (Linux MAXSYMLINKS)."""
    store_db_busy_timeout_s: float = 30.0
    """Waiting for the store database lock."""
    gpg_export_timeout_s: float = 60.0
    """`gpg --export` for pgp:UID recipients."""
    max_tar_entries: int = 1_000_000
    """Entries in one layer tar."""
    dir_meta_memory_entries: int = 16384
    """Directory metadata records (mode, owner, mtime: set after the children) kept in memory per layer unpack
    or rootfs merge; more spill to a scratch SQLite file beside the tree (a record costs ~300 bytes)."""
    max_tar_name_bytes: int = 4096
    """A member name or link name (PATH_MAX)."""
    max_tar_pax_header_bytes: int = 1 * MiB
    """One PAX extended header (Go's archive/tar cap)."""
    max_tar_sparse_segments: int = 65536
    """Segments of one sparse file."""
    max_tar_file_real_bytes: int = 1 << 40
    """Expanded size of one (sparse) file."""
    max_copy_up_bytes: int = 1 * GiB
    """File bytes one layer may copy up from its lower layers for cross-layer hardlinks (each target is copied
    once, but a layer that replaces a copied-up directory can make a target visible, and copied, again)."""
    max_offline_fs_file_bytes: int = 16 * MiB
    """One offline_fs_kbc key or resource file."""
    max_resource_uri_length: int = 2048
    """A kbs:// resource URI, in characters."""
    max_policy_resource_bytes: int = 4 * MiB
    """A policy, key or sigstore config read from a location."""
    max_policy_bytes: int = 4 * MiB
    """containers-policy.json."""
    max_sigstore_payload_bytes: int = 4 * MiB
    """A cosign payload (containers/image MaxSignatureBodySize)."""
    max_policy_reasons_per_requirement: int = 16
    """Rejection reasons kept per requirement."""
    max_signed_reference_length: int = 1024
    """A reference claimed by a signature, before any regex runs."""
    max_registries_d_file_bytes: int = 1 * MiB
    """One registries.d YAML file."""
    max_registries_d_files: int = 1000
    """Files in a registries.d directory."""
    max_lookaside_signatures: int = 128
    """Signatures read per manifest digest."""
    max_signature_bytes: int = 4 * MiB
    """One simple signature."""
    max_signature_list_bytes: int = 4 * MiB
    """An X-Registry-Supports-Signatures answer."""
    max_sigstore_attachment_layers: int = 256
    """Layers of a sha256-<hex>.sig manifest."""
    max_private_key_bytes: int = 64 * KiB
    """A cosign private key file."""
    max_scrypt_memory_bytes: int = 256 * MiB
    """scrypt memory (128*r*N) for encrypted cosign keys."""
    max_scrypt_parallelism: int = 16
    """scrypt parallelism ``p`` accepted from an encrypted cosign key file (cosign writes 1)."""
    max_chain_certificates: int = 10
    """Certificates in a keyless signature chain."""
    max_chain_depth: int = 8
    """X.509 chain depth."""
    max_signed_payload_bytes: int = 4 * MiB
    """A signed message payload after decompression."""
    max_keyring_bytes: int = 16 * MiB
    """A trusted GPG keyring."""
    max_decompression_ratio: int = 4096
    """Uncompressed bytes per compressed byte of a layer (gzip cannot exceed ~1032:1; zstd can, hence generous)."""
    decompression_ratio_allowance_bytes: int = 64 * MiB
    """Uncompressed bytes always allowed before the ratio applies (small, highly compressible layers)."""
    stream_chunk_bytes: int = 1 * MiB
    """Read size of the streaming layer pipeline."""
    stream_queue_chunks: int = 4
    """Chunks in flight per pipeline stage (bounds memory)."""
    keyprovider_timeout_s: float = 60.0
    """One key provider call (Go has none; we do)."""
    keyprovider_max_response_bytes: int = 1 * MiB
    """A key provider's JSON answer."""
    keyprovider_server_max_request_bytes: int = 1 * MiB
    """One WrapKey request coco-keyprovider accepts (private options of a few hundred bytes, plus parameters)."""
    keyprovider_server_workers: int = 8
    """Concurrent WrapKey calls coco-keyprovider serves (each may wait on one KBS admin request)."""
    keyprovider_server_max_calls: int = 64
    """WrapKey calls in flight or queued for a worker; beyond this coco-keyprovider answers RESOURCE_EXHAUSTED
    (a burst from one image's layers waits instead of failing)."""
    keyprovider_max_remembered_keks: int = 10_000
    """Key ids whose random KEK coco-keyprovider remembers (reused for every layer wrapped under that kid)."""
    keyprovider_server_grace_s: float = 5.0
    """On SIGTERM/SIGINT coco-keyprovider lets calls in flight finish for this long, then stops."""
    max_json_depth: int = 64
    """Nesting of any JSON document we parse (real manifests, policies and tokens nest under 10)."""
    max_json_number_chars: int = 64
    """Characters of one JSON number (a 64-bit size has 20; Python's int() of 100,000 digits is quadratic)."""
    max_error_line_chars: int = 2000
    """One ``error: ...`` line of the CLI (longer lines are cut; producers list a few items and count the rest)."""
    max_internal_error_message_chars: int = 500
    """The message of an unexpected (non-CocoError) exception quoted in its ``error: internal error`` line."""
    kbs_connect_timeout_s: float = 30.0
    """Connecting to a KBS."""
    kbs_read_timeout_s: float = 60.0
    """Between two reads from a KBS (the Rust client's whole-request timeout is 60 s)."""
    kbs_request_deadline_s: float = 120.0
    """One KBS request from connect to the last byte of the answer (a server dripping bytes is cut off)."""
    kbs_max_response_bytes: int = 1 * MiB
    """A KBS ``/auth`` or ``/attest`` answer or error body (a challenge is ~80 bytes, an EAR token a few KiB)."""
    kbs_max_resource_response_bytes: int = 8 * MiB
    """A KBS resource answer (JWE JSON: base64url of the resource, so ~4/3 of the largest resource)."""
    kbs_max_request_bytes: int = 2 * MiB
    """A request body we send (Trustee's ``payload_request_size`` default is 2 MiB)."""
    kbs_max_token_bytes: int = 64 * KiB
    """An attestation token (JWT) from a KBS or token provider."""
    kbs_token_refresh_margin_s: float = 30.0
    """Attest again this long before the cached token's ``exp`` (Trustee's verifier allows 60 s leeway)."""
    kbs_max_cookie_bytes: int = 4 * KiB
    """The ``kbs-session-id`` cookie value (Trustee's is 32 hex characters)."""
    kbs_max_idle_connections: int = 4
    """Kept-alive connections one KBS client holds idle for its next requests (more concurrent ones are closed)."""
    max_annotation_packet_bytes: int = 64 * KiB
    """A decoded AnnotationPacket JSON (a wrapped layer key is ~300 bytes)."""
    ttrpc_max_message_bytes: int = 4 * MiB
    """Payload of one ttrpc frame (specs/ttrpc.md §2: containerd/ttrpc and ttrpc-rust both cap at 4 MiB)."""
    ttrpc_read_chunk_bytes: int = 64 * KiB
    """Bytes read from a ttrpc socket at a time (a connection buffers at most one frame plus one chunk)."""
    ttrpc_frame_read_timeout_s: float = 30.0
    """From the first byte of a ttrpc frame to its last (a slow client that trickles a frame is cut off)."""
    ttrpc_idle_timeout_s: float | None = None
    """A server connection with no call in flight and no bytes arriving is closed after this long. Off by
    default: Rust and Go ttrpc clients (CDH -> AA, kata-agent -> CDH) open one connection for their lifetime and
    do not reconnect; ``ttrpc_max_connections`` bounds idle connections instead."""
    ttrpc_write_timeout_s: float = 30.0
    """Flushing one ttrpc frame to a peer that does not read (the connection is then closed)."""
    ttrpc_max_connections: int = 128
    """Open connections per ttrpc server; further connections are closed at once."""
    ttrpc_max_concurrent_calls: int = 32
    """Calls in flight per ttrpc server connection; further requests wait unread (back-pressure)."""
    ttrpc_max_timeout_s: float = 3600.0
    """Longest deadline a ttrpc server honours from a request's ``timeout_nano`` (0, no deadline, gets this)."""
    ttrpc_call_timeout_s: float = 50.0
    """Default deadline of a ttrpc client call (guest-components clients of the AA and CDH use 50 s)."""
    ttrpc_connect_timeout_s: float = 10.0
    """Connecting a ttrpc client."""
    max_tee_report_bytes: int = 1 * MiB
    """One blob read from a TEE device: a configfs-tsm outblob/auxblob, an SGX quote, a TD/SNP report, a CCA
    token (TDX quotes are ~5 KiB, SNP certificate tables ~10 KiB)."""
    max_tee_register_bytes: int = 4 * KiB
    """A sysfs measurement register file (RTMR, MRCONFIGID; 48 bytes in practice)."""
    max_ccel_bytes: int = 16 * MiB
    """The ACPI CCEL event-log table read for TDX/CSV evidence."""
    max_eventlog_bytes: int = 64 * MiB
    """The AA event log (AAEL) file: read at start-up and appended to evidence."""
    max_event_text_bytes: int = 64 * KiB
    """One ``domain operation content`` runtime-measurement event."""
    max_tsm_generation_retries: int = 3
    """configfs-tsm reports retried when the entry's generation shows a concurrent writer."""
    max_snp_certificates: int = 64
    """Entries of an SNP certificate table (VCEK/VLEK, ASK, ARK, CRL in practice)."""
    max_initdata_bytes: int = 1 * MiB
    """An init-data TOML document (Kata passes it in a pod annotation)."""
    max_initdata_entries: int = 256
    """Entries of the init-data ``[data]`` table."""
    tpm_command_timeout_s: float = 30.0
    """One tpm2-tools command (a quote on a slow hardware TPM takes about a second)."""
    tdx_quote_buffer_bytes: int = 16 * KiB
    """The TDX GetQuote buffer (libtdx_attest's REQ_BUF_SIZE, 4 pages): a QGS request or answer plus its 28 bytes
    of headers must fit, on vsock as through the ioctl (a TD quote with its PCK chain is ~5 KiB)."""
    tdx_qgs_timeout_s: float = 60.0
    """One exchange with the TDX Quote Generation Service: connect, send the TD report, read the quote
    (libtdx_attest waits forever; a warm QGS answers in well under a second, a cold one in a few seconds)."""
    se_max_arcb_bytes: int = 1 * MiB
    """An IBM SE attestation request control block (the uvdevice's ``UVIO_ATT_ARCB_MAX_LEN``, 1 MiB)."""
    se_max_measurement_bytes: int = 32 * KiB
    """An SE attestation measurement the request asks for (``UVIO_ATT_MEASUREMENT_MAX_LEN``; HMAC-SHA512: 64)."""
    se_max_additional_bytes: int = 32 * KiB
    """SE additional data the request asks for (``UVIO_ATT_ADDITIONAL_MAX_LEN``; a few hundred bytes in practice)."""
    max_aa_config_bytes: int = 1 * MiB
    """The attestation agent's config file (TOML or JSON; upstream examples are under 1 KiB)."""
    aa_grpc_max_message_bytes: int = 4 * MiB
    """One request or answer message of the AA's gRPC service (the same cap as its ttrpc frames)."""
    aa_coco_as_max_response_bytes: int = 1 * MiB
    """The attestation service's answer to ``GetToken("coco_as")`` (an EAR token of a few KiB)."""
    aa_shutdown_grace_s: float = 5.0
    """On SIGTERM/SIGINT the attestation agent lets calls in flight finish for this long, then stops."""
    devkbs_max_request_bytes: int = 2 * MiB
    """A request body the dev KBS accepts (Trustee's ``payload_request_size`` default, 2 MiB; config overrides)."""
    devkbs_max_header_bytes: int = 16 * KiB
    """Request line plus headers of one dev KBS request."""
    devkbs_max_connections: int = 256
    """Open connections of the dev KBS; further ones are closed at once."""
    devkbs_socket_timeout_s: float = 30.0
    """A dev KBS connection idle, or trickling a request, for this long is closed."""
    devkbs_session_lifetime_s: float = 300.0
    """A ``kbs-session-id`` session (Trustee ``[attestation_service] timeout``, 5 minutes)."""
    devkbs_max_sessions: int = 100_000
    """Live sessions; the oldest is dropped when a new one would exceed this."""
    devkbs_token_lifetime_s: int = 300
    """An EAR attestation token (Trustee's default, 5 minutes)."""
    devkbs_token_leeway_s: int = 60
    """Clock leeway when the dev KBS checks a token's ``exp`` (jsonwebtoken's default)."""
    devkbs_admin_token_leeway_s: int = 60
    """Clock leeway for admin tokens' ``exp`` and ``nbf``."""
    devkbs_max_resource_bytes: int = 4 * MiB
    """One stored resource (it is answered as a JWE of ~4/3 its size, under the client's 8 MiB cap)."""
    devkbs_max_policy_bytes: int = 1 * MiB
    """An uploaded Rego policy."""
    devkbs_policy_cache_entries: int = 4096
    """Resource-policy verdicts remembered per policy (keyed by the whole input and data)."""
    devkbs_max_reference_values: int = 10_000
    """Reference values the dev KBS's RVPS holds."""
    devkbs_token_cache_entries: int = 4096
    """Attestation tokens whose signature the dev KBS verified, remembered by the SHA-256 of their bytes with
    their claims and parsed TEE key (``exp`` is still checked on every request); the least recently used go."""
    max_sealed_secret_bytes: int = 1 * MiB
    """A ``sealed.`` secret's text (UnsealSecret input, secret files); upstream secrets are a few KiB."""
    max_cdh_config_bytes: int = 1 * MiB
    """The CDH config file (TOML or JSON)."""
    cdh_grpc_max_message_bytes: int = 4 * MiB
    """One request or answer of the CDH's gRPC services (the same cap as its ttrpc frames)."""
    cdh_shutdown_grace_s: float = 5.0
    """On SIGTERM/SIGINT the CDH lets calls in flight finish for this long (gRPC), then stops."""
    rest_max_head_bytes: int = 16 * KiB
    """Request line plus headers of one api-server-rest request (longer heads get 431 and the connection closes)."""
    rest_max_body_bytes: int = 64 * KiB
    """Body of one api-server-rest request (only ``POST /aa/aael`` has one; an event is a few hundred bytes)."""
    rest_read_timeout_s: float = 30.0
    """From an api-server-rest connection's first byte to the end of its request (a slow client is cut off)."""
    rest_write_timeout_s: float = 30.0
    """Flushing one api-server-rest answer to a client that does not read."""
    rest_backend_timeout_s: float = 50.0
    """One AA or CDH call made for an api-server-rest request (upstream's TTRPC_TIMEOUT is 50 s)."""
    rest_max_connections: int = 64
    """Open api-server-rest connections; further connections are closed at once."""
    secure_mount_command_timeout_s: float = 300.0
    """One cryptsetup, mkfs or mount command of a secure mount (luksFormat with integrity wipes nothing: no-wipe)."""
    secure_mount_max_key_bytes: int = 8 * KiB
    """A secure-mount LUKS key fetched from ``file://``, ``kbs://`` or a sealed secret (the random key is 4 KiB)."""
    azure_hcl_report_timeout_s: float = 5.0
    """Waiting for the Azure paravisor to answer a report request with an HCL report binding our report data
    (upstream sleeps a fixed 3 s before one read; we poll, and refuse a report still stale after this long)."""
    azure_hcl_report_poll_s: float = 0.1
    """Pause between two reads of the HCL report NV index while it is stale."""
    azure_imds_timeout_s: float = 30.0
    """One Azure IMDS call (VCEK certificates, TD quote), connect to last byte."""
    azure_imds_max_response_bytes: int = 256 * KiB
    """An Azure IMDS answer (the VCEK plus AMD chain PEMs are ~5 KiB, a TD quote in base64url ~7 KiB)."""
    cdh_max_concurrent_pulls: int = 8
    """PullImage calls the CDH runs at once (its own worker threads; further pulls wait their turn). Upstream
    serialises every pull behind one mutex."""
    cdh_max_concurrent_calls: int = 16
    """GetResource, UnsealSecret and UnWrapKey calls the CDH runs at once, in worker threads of their own: slow
    pulls never hold them up."""


DEFAULT_LIMITS = Limits()
