#!/usr/bin/env python3
"""The chart's token settings are the binary's: values.schema.json's `tokens[]` schema is built from
`token-vendor schema` (scripts/validate-k8s runs the check; `--write` rebuilds the file).

  schema_agreement.py BINARY            exit 1 (with a diff) unless charts/token-vendor/values.schema.json is
                                        exactly what BINARY's schema gives now
  schema_agreement.py BINARY --write    rebuild charts/token-vendor/values.schema.json from BINARY's schema

The binary's schema (generated from src/config/raw.rs) goes under `$defs` as `config.*`, untouched but for
the two rules the chart adds to every object in it (`patternProperties`, below). On top of it this script
builds `$defs.token`, the chart's token entry, and `$defs.output`; the CHART_* tables below are the one place
that says how a chart token differs from a config-file token:
  - the chart mounts the credentials from a Secret, so the *_file / *_env keys of the credentials are the
    chart's to set (the templates refuse them with a sentence), and the chart adds the PEM and Secret-key
    keys of CHART_KEYS;
  - outputs[].path is relative to the token's directory, and the chart sets the group (no uid/gid);
  - keys with a capital letter pass the schema, so that the templates can name the snake_case key instead
    (chart versions before 0.5.0 took camelCase token settings).
Everything else (one of token_url/base_url/issuer, the keys of each auth_method, bounds) is checked by the
sidecar's own `token-vendor check` at start; scripts/validate-k8s runs it on every rendered config.
"""
import copy
import difflib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA = os.path.join(ROOT, "charts", "token-vendor", "values.schema.json")
PREFIX = "config."

# Keys of a chart token that the config file does not have: PEM contents the chart writes into its Secret,
# and the Secret keys read with existingSecret.
CHART_KEYS = {
    "client_id_key": "With existingSecret: the Secret key of the client id (default \"<name>.client_id\").",
    "client_secret_key": "With existingSecret: the Secret key of the client secret (default \"<name>.client_secret\").",
    "private_key": "private_key_jwt: the unencrypted PKCS#8 PEM key (--set-file tokens[0].private_key=./key.pem); "
    "written into the chart's Secret and mounted in the sidecar only.",
    "private_key_key": "With existingSecret: the Secret key of the private key (default \"<name>.private_key\").",
    "certificate": "private_key_jwt: the PEM certificate of the key (for x5t#S256), written into the chart's Secret.",
    "certificate_key": "With existingSecret: the Secret key of the certificate (default \"<name>.certificate\").",
}
# Config-file keys whose meaning the chart changes (the description says how).
CHART_DESCRIPTIONS = {
    "client_id": "The client id; written into the chart's Secret and mounted as a file (not with existingSecret).",
    "client_secret": "The client secret (--set-file tokens[0].client_secret=./secret.txt); written into the chart's "
    "Secret and mounted as a file (not with existingSecret).",
    "name": "The token's name: lowercase letters, digits and '-'; its files go to <tokenVolume.mountPath>/<name>/.",
}
# Output keys the chart sets itself.
CHART_OUTPUT_DROP = ("uid", "gid")
CAPITALS = {"[A-Z]": {"description": "a camelCase key: refused by the templates, which name the snake_case key"}}


def binary_schema(binary):
    out = subprocess.run([binary, "schema"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def prefixed(node):
    """The binary's schema with its $refs pointing at the prefixed $defs and camelCase keys let through."""
    if isinstance(node, dict):
        node = {k: prefixed(v) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node["$ref"] = "#/$defs/" + PREFIX + ref[len("#/$defs/"):]
        if node.get("additionalProperties") is False:
            node["patternProperties"] = CAPITALS
        return node
    if isinstance(node, list):
        return [prefixed(v) for v in node]
    return node


def build(binary, committed):
    src = binary_schema(binary)
    defs = {PREFIX + k: v for k, v in prefixed(src.pop("$defs")).items()}
    token = prefixed({k: v for k, v in src.items() if k not in ("$schema", "$comment", "title")})

    props = token["properties"]
    for k, text in CHART_DESCRIPTIONS.items():
        props[k] = {**props[k], "description": text}
    for k, text in CHART_KEYS.items():
        props[k] = {"type": "string", "description": text}
    props["outputs"] = {
        "type": "array",
        "minItems": 1,
        "description": "The files to write, under the token's directory.",
        "items": {"$ref": "#/$defs/output"},
    }
    props = dict(sorted(props.items()))
    token = {
        "description": "A token: the config file's token settings (token-vendor schema), with the credentials in "
        "the chart's Secret and the outputs under the token's directory.",
        **{k: v for k, v in token.items() if k != "properties"},
        "properties": props,
    }

    output = copy.deepcopy(defs[PREFIX + "RawOutput"])
    for k in CHART_OUTPUT_DROP:
        output["properties"].pop(k)
    output["properties"]["path"] = {
        **output["properties"]["path"],
        "description": "The file, relative to the token's directory.",
    }
    # `file` (chart versions before 0.5.0) passes, so that the templates can say "path".
    output["properties"]["file"] = {"description": "renamed to path: refused by the templates"}
    output["required"] = []
    output["description"] = "An output file: the config file's output, path relative to the token's directory."

    schema = copy.deepcopy(committed)
    kept = {k: v for k, v in schema["$defs"].items() if not k.startswith(PREFIX) and k not in ("token", "output")}
    schema["$defs"] = {**kept, "token": token, "output": output, **dict(sorted(defs.items()))}
    schema["$comment"] = (
        "$defs.config.* come from `token-vendor schema`; $defs.token and $defs.output are built from them by "
        "tests/k8s/schema_agreement.py --write, which scripts/validate-k8s checks. Edit the rest by hand."
    )
    return schema


def text(schema):
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv):
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--write"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(SCHEMA) as f:
        committed_text = f.read()
    want = text(build(argv[1], json.loads(committed_text)))
    if len(argv) == 3:
        with open(SCHEMA, "w") as f:
            f.write(want)
        print(f"wrote {os.path.relpath(SCHEMA, ROOT)}")
        return 0
    if committed_text == want:
        print("values.schema.json: its token settings are the binary's (token-vendor schema)")
        return 0
    rel = os.path.relpath(SCHEMA, ROOT)
    sys.stdout.writelines(difflib.unified_diff(committed_text.splitlines(True), want.splitlines(True), rel, "built"))
    print(f"\n{rel} is stale: run python3 tests/k8s/schema_agreement.py target/debug/token-vendor --write")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
