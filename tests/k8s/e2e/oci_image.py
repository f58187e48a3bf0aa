#!/usr/bin/env python3
"""Writes a single-layer OCI image archive (an OCI image layout in a tar) that `ctr images import` takes.

    oci_image.py SPEC.json OUT.tar

SPEC.json:
    {"name": "localhost/token-vendor:e2e",          the reference containerd imports it as
     "config": {"User": "65532:65532", "Entrypoint": [...], "Cmd": [...], "Env": [...]},
     "files": [{"path": "token-vendor", "src": "/abs/file", "mode": 493},      copied
               {"path": "etc/passwd", "text": "...", "mode": 420},             written
               {"path": "bin/sh", "symlink": "busybox"},
               {"path": "tmp", "dir": true, "mode": 1023}]}

The layer is an uncompressed tar with every entry owned by 0:0 and dated 0, in the order given (parent
directories are added first), so the same inputs give the same bytes and the same digests.
"""

import hashlib
import io
import json
import sys
import tarfile


def layer_bytes(files):
    buf = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(info, data=None):
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        def parents(path):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    add(info)

        for f in files:
            path = f["path"].strip("/")
            parents(path)
            info = tarfile.TarInfo(path)
            if f.get("dir"):
                info.type = tarfile.DIRTYPE
                info.mode = f.get("mode", 0o755)
                seen.add(path)
                add(info)
            elif "symlink" in f:
                info.type = tarfile.SYMTYPE
                info.linkname = f["symlink"]
                info.mode = 0o777
                add(info)
            else:
                if "src" in f:
                    with open(f["src"], "rb") as src:
                        data = src.read()
                else:
                    data = f["text"].encode()
                info.size = len(data)
                info.mode = f.get("mode", 0o644)
                add(info, data)
    return buf.getvalue()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: oci_image.py SPEC.json OUT.tar")
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    blobs = {}

    def blob(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest, len(data)

    layer = layer_bytes(spec["files"])
    layer_digest, layer_size = blob(layer)
    config = {
        "architecture": spec.get("architecture", "amd64"),
        "os": "linux",
        "config": spec.get("config", {}),
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "tests/k8s/e2e/oci_image.py"}],
    }
    config_digest, config_size = blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest, sort_keys=True).encode())
    name = spec["name"]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": config["architecture"], "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                },
            }
        ],
    }
    with tarfile.open(sys.argv[2], mode="w", format=tarfile.PAX_FORMAT) as out:

        def put(path, data):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            out.addfile(info, io.BytesIO(data))

        put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for digest, data in sorted(blobs.items()):
            put("blobs/sha256/" + digest.split(":", 1)[1], data)
        put("index.json", json.dumps(index, sort_keys=True).encode())
    print(f"{name} {manifest_digest} layer {layer_size} bytes")


if __name__ == "__main__":
    main()
