#!/usr/bin/env bash
# Make podman usable on the project's CI VMs (no Docker engine, no registry to pull from):
# install podman and friends, and import an offline Debian bookworm base image built with
# debootstrap. Idempotent; the container tests call it. Needs root (CI runs as root).
set -euo pipefail
base=localhost/debian-base:bookworm
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker-registry >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah skopeo docker-registry debootstrap runc >/dev/null
fi
if ! podman image exists "$base"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
fi
echo "$base"
