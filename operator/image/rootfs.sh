#!/usr/bin/env bash
# Assembles the root filesystem of kelp's image in DEST: the kelp binary, the shared
# libraries the dynamic loader resolves for it, Debian's CA bundle, a passwd and group that
# name the non-root user 65532, and an empty /tmp. Used by the Dockerfile and by build.sh.
#
#   rootfs.sh BINARY DEST
set -euo pipefail
bin=${1:?usage: rootfs.sh BINARY DEST}
root=${2:?usage: rootfs.sh BINARY DEST}
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "rootfs.sh: $ca is missing (install Debian's ca-certificates)" >&2; exit 1; }

rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
# Without its symbol tables (a third of the release binary); binutils' strip where it is.
if command -v strip >/dev/null 2>&1; then
  strip --strip-all -o "$root/usr/local/bin/kelp" "$bin"
  chmod 0755 "$root/usr/local/bin/kelp"
else
  install -m 0755 "$bin" "$root/usr/local/bin/kelp"
fi

# Every library ldd resolves, and the loader itself, at the paths the binary asks for.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
[ -n "$libs" ] || { echo "rootfs.sh: ldd found no libraries for $bin (a static binary needs none; rebuild as glibc)" >&2; exit 1; }
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

install -m 0644 "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
