#!/usr/bin/env python3
"""Writes an OCI image layout (https://github.com/opencontainers/image-spec) of one layer
from a root filesystem, without pulling or running anything: the same image the Dockerfile
builds. The layer is reproducible: sorted entries, owner 0:0, one fixed modification time
(SOURCE_DATE_EPOCH, default 0), so the same inputs give the same digest.

    oci-layout.py ROOTFS OUT_DIR TAG [--archive FILE]
"""
import datetime
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

def main():
    args = sys.argv[1:]
    archive = None
    if "--archive" in args:
        i = args.index("--archive")
        archive = args[i + 1]
        del args[i : i + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    rootfs, out, tag = args
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    version = os.environ.get("KELP_VERSION", tag)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            rel = os.path.relpath(dirpath, rootfs)
            if rel != ".":
                entries.append(rel)
            entries.extend(os.path.normpath(os.path.join(rel, f)) for f in sorted(filenames))
        for rel in sorted(entries):
            info = tar.gettarinfo(os.path.join(rootfs, rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            if info.isfile():
                with open(os.path.join(rootfs, rel), "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    layer_tar = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=mtime, compresslevel=6) as g:
        g.write(layer_tar)
    layer_gz = gz.getvalue()

    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def blob(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)

    layer_digest, layer_size = blob(layer_gz)
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.title": "kelp",
        "org.opencontainers.image.description": "kelp operator: AI modules on GPU machines in OpenStack, EC2 and EGI FedCloud",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.source": "https://github.com/imagine-ai/kelp",
    }
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "65532:65532",
            "Entrypoint": ["/usr/local/bin/kelp"],
            "Cmd": ["run"],
            "Env": ["PATH=/usr/local/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
        "history": [{"created": created, "created_by": "operator/image/build.sh"}],
    }
    config_digest, config_size = blob(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
        "annotations": labels,
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True, separators=(",", ":"))
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    if archive:
        with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
            for rel in ["oci-layout", "index.json"] + sorted(
                os.path.join("blobs", "sha256", b) for b in os.listdir(blobs)
            ):
                info = tar.gettarinfo(os.path.join(out, rel), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = mtime
                with open(os.path.join(out, rel), "rb") as f:
                    tar.addfile(info, f)
    print(f"{out}: {tag} manifest {manifest_digest} layer {layer_size} bytes ({len(layer_tar)} unpacked)")

if __name__ == "__main__":
    main()
