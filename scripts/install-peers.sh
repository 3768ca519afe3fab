#!/bin/sh
# Install the real peers the tests talk to (Debian packages), only those that are missing.
set -eu
need=""
command -v skopeo >/dev/null 2>&1 || need="$need skopeo"
command -v gpg >/dev/null 2>&1 || need="$need gnupg"
command -v softhsm2-util >/dev/null 2>&1 || need="$need softhsm2"
command -v umoci >/dev/null 2>&1 || need="$need umoci"
command -v docker-registry >/dev/null 2>&1 || need="$need docker-registry"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
# make demo: the workload fetches its secret through api-server-rest with curl.
command -v curl >/dev/null 2>&1 || need="$need curl"
# Go containerd/ttrpc peer (tests/ttrpc_peer, built offline with GO111MODULE=off GOPATH=/usr/share/gocode).
command -v go >/dev/null 2>&1 || need="$need golang-go"
[ -d /usr/share/gocode/src/github.com/containerd/ttrpc ] || need="$need golang-github-containerd-ttrpc-dev"
command -v swtpm >/dev/null 2>&1 || need="$need swtpm swtpm-tools"
command -v tpm2_quote >/dev/null 2>&1 || need="$need tpm2-tools"
# SecureMount: LUKS2 formatting and header checks on loop devices (tests/interop/test_secure_mount_luks.py).
command -v cryptsetup >/dev/null 2>&1 || need="$need cryptsetup-bin"
[ -z "$need" ] && exit 0
echo "installing test peers:$need"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $need
