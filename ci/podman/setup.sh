#!/usr/bin/env bash
# Make podman usable on the project's CI VMs (no Docker engine, no registry to pull from):
# install podman and friends, and import an offline Debian bookworm base image built with
# debootstrap, as lean as debian:bookworm-slim (the releases' base): no apt lists, no cached
# packages, and the apt setting official Debian images carry that keeps builds from caching them.
# Idempotent; the container tests call it. Needs root (CI runs as root).
set -euo pipefail
base=localhost/debian-base:bookworm-slim
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker-registry >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah skopeo docker-registry debootstrap runc >/dev/null
fi
if ! podman image exists "$base"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
  tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
fi
echo "$base"
