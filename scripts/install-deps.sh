#!/usr/bin/env bash
# Installs everything Skiff's build and test suite need beyond the Rust
# toolchain, on Debian 12, as root. Safe to run again: it only fetches what is
# missing, so the test entry point can call it every time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# protoc builds the protobuf crates; python3-kubernetes is the official client
# the end-to-end tests drive; curl talks raw HTTP to the API server in tests
# and scripts; iproute2 and procps give ss/ip and pgrep/kill for the harness.
APT_PACKAGES=(
    protobuf-compiler python3-kubernetes curl ca-certificates iproute2 procps
    # The test cluster harness: private containerds with runc and Debian's
    # reference CNI plugins, busybox for the web app image, gcc and static
    # libc for the pause binary.
    containerd runc containernetworking-plugins iptables busybox-static gcc libc6-dev
    # The agent's service proxy deletes stale UDP conntrack entries with it.
    conntrack
)

# kubectl 1.20 is the oldest client Skiff promises to serve. Debian ships it as
# kubernetes-client; it is unpacked into the build tree rather than installed,
# so that it never replaces whichever kubectl the machine already has.
KUBECTL_120_DIR=target/tools/kubectl-1.20
KUBECTL_120="$KUBECTL_120_DIR/usr/bin/kubectl"

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then
        SUDO=(sudo)
    else
        echo "install-deps: must run as root (or with sudo available)" >&2
        exit 1
    fi
else
    SUDO=()
fi
export DEBIAN_FRONTEND=noninteractive

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

need_kubectl=0
if [[ ! -x $KUBECTL_120 ]]; then
    need_kubectl=1
fi

if [[ ${#missing[@]} -eq 0 && $need_kubectl -eq 0 ]]; then
    echo "install-deps: all packages present, kubectl 1.20 at $KUBECTL_120"
    exit 0
fi

# One index refresh covers both the install and the download below.
echo "install-deps: refreshing the apt package index"
"${SUDO[@]}" apt-get update -q

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "install-deps: installing ${missing[*]}"
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "install-deps: apt packages already installed"
fi

if [[ $need_kubectl -eq 1 ]]; then
    echo "install-deps: fetching Debian's kubernetes-client (kubectl 1.20) into $KUBECTL_120_DIR"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # apt drops privileges to _apt for downloads; let it write here so it
    # doesn't fall back to an unsandboxed download with a warning.
    if id _apt >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        chown _apt "$work"
    fi
    (cd "$work" && apt-get download -q kubernetes-client)
    deb=$(ls "$work"/kubernetes-client_*.deb)
    rm -rf "$KUBECTL_120_DIR.partial"
    mkdir -p "$KUBECTL_120_DIR.partial"
    dpkg-deb -x "$deb" "$KUBECTL_120_DIR.partial"
    # Swap in only a complete tree, so an interrupted run is simply redone.
    rm -rf "$KUBECTL_120_DIR"
    mv "$KUBECTL_120_DIR.partial" "$KUBECTL_120_DIR"
    echo "install-deps: $("$KUBECTL_120" version --client --short 2>/dev/null || "$KUBECTL_120" version --client)"
fi

echo "install-deps: done"
