#!/usr/bin/env bash
# Container images for a machine with no image registry: a Debian base made here with
# debootstrap, then one image per recipe in deploy/images/*/Dockerfile, built FROM that base.
#
#   scripts/images.sh          # builds what changed; writes .env.local-images
#   docker-compose --env-file .env.local-images ... (docs/deployment.md has the whole path)
#
# - The base (portcullis-local/debian:bookworm): `debootstrap --variant=minbase` from the
#   mirror apt on this machine uses, with ca-certificates and curl (the healthchecks), loaded
#   with `docker import`.
# - A recipe's `# packages:` line is installed in a chroot on the host, so no build needs the
#   network: the files the install adds become the build context's layer.tar, which the
#   Dockerfile ADDs on top of the base.
# - portcullis-local/portcullis gets target/release/portcullis (built here if needed).
# - Each image carries the digest of its inputs (recipe files, parent image, binary) in the
#   label org.portcullis.inputs; an image whose label matches is left as it is.
# - The local images have names of their own (portcullis-local/NAME:VERSION); they are never
#   tagged as the public images they stand in for.
#
# Needs root (debootstrap and chroot), debootstrap (installed if missing) and Docker.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

SUITE=bookworm
BASE=portcullis-local/debian:$SUITE
BASE_PACKAGES=ca-certificates,curl
# What no image needs: package lists and caches, documentation, translations.
TRIM=(var/lib/apt/lists var/cache/apt var/cache/debconf/templates.dat-old usr/share/doc
  usr/share/man usr/share/info usr/share/locale usr/share/lintian etc/postgresql-common/createcluster.d)
# The version each recipe's tag carries: Debian bookworm's, fixed for the suite's life.
declare -A TAGS=([redis]=7.0 [postgres]=15 [nginx]=1.22 [prometheus]=2.42 [portcullis]=latest)
LABEL=org.portcullis.inputs
work=$repo/target/images
export DOCKER_BUILDKIT=0 # the classic builder: FROM an image that exists only here

log() { printf '== %s\n' "$*" >&2; }

label_of() { docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }
digest() { sha256sum | cut -c1-64; }

# The apt sources of this machine for the suite (main, updates, security), as sources.list.
mirrors() {
  apt-cache policy 2>/dev/null |
    awk -v s="$SUITE" '$3 ~ "^" s "(-updates|-security)?/main$" { split($3, p, "/"); print "deb " $2 " " p[1] " main" }' |
    sort -u
}

# Runs a command in the chroot $1 with policy-rc.d refusing service starts.
in_chroot() {
  local root=$1; shift
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # postgresql-common would create and keep a cluster; the image's entrypoint makes its own.
  mkdir -p "$root/etc/postgresql-common/createcluster.d"
  echo 'create_main_cluster = false' >"$root/etc/postgresql-common/createcluster.d/portcullis.conf"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  DEBIAN_FRONTEND=noninteractive chroot "$root" "$@"
  rm -f "$root/usr/sbin/policy-rc.d"
  : >"$root/etc/resolv.conf"
}

trimmed() { # a file list on stdin, less what TRIM names
  local pattern
  pattern=$(printf '^\\./%s(/|$)|' "${TRIM[@]}")
  grep -Ev "${pattern%|}"
}

build_base() {
  local sources mirror inputs
  sources=$(mirrors)
  [ -n "$sources" ] || { echo "images.sh: apt has no $SUITE source (run apt-get update)" >&2; exit 1; }
  inputs=$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "${TRIM[*]}" "$sources" | digest)
  if [ "$(label_of "$BASE")" = "$inputs" ]; then log "$BASE is up to date"; return; fi
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  mirror=$(echo "$sources" | grep " $SUITE main$" | head -n 1 | cut -d' ' -f2)
  log "building $BASE (debootstrap from $mirror)"
  rm -rf "$work/rootfs" && mkdir -p "$work"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work/rootfs" "$mirror" \
    >"$work/debootstrap.log"
  echo "$sources" >"$work/rootfs/etc/apt/sources.list"
  in_chroot "$work/rootfs" apt-get update -qq
  in_chroot "$work/rootfs" apt-get upgrade -y -qq >/dev/null
  (cd "$work/rootfs" && find . -mindepth 1 | trimmed | tar --no-recursion -cf - -T -) |
    docker import --change "LABEL $LABEL=$inputs" --change 'CMD ["bash"]' - "$BASE" >/dev/null
  docker image inspect --format '{{.Id}}' "$BASE" >"$work/rootfs.of"
}

# $work/rootfs: the base image's files with apt's lists, for the chroots. Kept from building
# the base, else exported from the image (a fresh checkout on a machine that has it).
base_rootfs() {
  local id
  id=$(docker image inspect --format '{{.Id}}' "$BASE")
  [ "$(cat "$work/rootfs.of" 2>/dev/null)" = "$id" ] && return
  log "unpacking $BASE for the chroots"
  rm -rf "$work/rootfs" && mkdir -p "$work/rootfs"
  local container
  container=$(docker create "$BASE")
  docker export "$container" | tar -x -C "$work/rootfs"
  docker rm "$container" >/dev/null
  in_chroot "$work/rootfs" apt-get update -qq
  echo "$id" >"$work/rootfs.of"
}

# The files a chroot gained since the marker (new or changed: their inode changed after it).
layer() {
  local root=$1 marker=$2 out=$3
  (cd "$root" && find . -mindepth 1 -cnewer "$marker" | trimmed | tar --no-recursion -cf "$out" -T -)
}

build_image() { # recipe directory
  local dir=$1 name image packages context inputs
  name=$(basename "$dir")
  image=portcullis-local/$name:${TAGS[$name]:?no tag for $name in scripts/images.sh}
  packages=$(sed -n 's/^# packages:[[:space:]]*//p' "$dir/Dockerfile")
  context=$work/context/$name
  rm -rf "$context" && mkdir -p "$context"
  cp -a "$dir"/. "$context"/
  if [ "$name" = portcullis ]; then
    cargo build --release --quiet -p portcullis-server
    cp target/release/portcullis "$context/portcullis"
  fi
  inputs=$( (docker image inspect --format '{{.Id}}' "$BASE"; cd "$context" && find . -type f | sort | xargs sha256sum) | digest)
  if [ "$(label_of "$image")" = "$inputs" ]; then log "$image is up to date"; return; fi
  log "building $image${packages:+ (packages: $packages)}"
  if [ -n "$packages" ]; then
    base_rootfs
    rm -rf "$work/chroot" && cp -a "$work/rootfs" "$work/chroot"
    touch "$work/marker" && sleep 1
    # shellcheck disable=SC2086 # a list of package names
    in_chroot "$work/chroot" apt-get install -y -qq --no-install-recommends $packages >"$work/$name-install.log"
    layer "$work/chroot" "$work/marker" "$context/layer.tar"
    rm -rf "$work/chroot"
  fi
  docker build -q --label "$LABEL=$inputs" -t "$image" "$context" >/dev/null
}

started=$(date +%s)
build_base
# Each image's compose variable (docker-compose.yml defaults it to the public image): NAME_IMAGE.
variables=
for dir in deploy/images/*/; do
  name=$(basename "$dir")
  build_image "${dir%/}"
  variables+="${name^^}_IMAGE=portcullis-local/$name:${TAGS[$name]}"$'\n'
done
printf '%s' "$variables" >.env.local-images
log "images ready in $(($(date +%s) - started)) s; compose variables in .env.local-images"
docker images --filter reference='portcullis-local/*' --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' >&2
