#!/usr/bin/env python3
"""The job token-vendor does, done the way a Python user would with the reference client.

benchling_sdk.auth.client_credentials_oauth2.ClientCredentialsOAuth2 (benchling-sdk 1.25.0) vends the
token; this loop writes it to a file atomically (temporary file + rename) whenever it changes, then
sleeps until the token's refresh_time, when the reference client's valid() turns false and the next
get_authorization_header() vends a new one. That is the most frugal loop the reference client allows
(it has no scheduler of its own); it reads Token.refresh_time through the client's private _token.

    reference_client.py --token-url URL --client-id ID --client-secret-file FILE --out PATH
                        [--tokens N] [--once]

With --tokens N it keeps N tokens (N clients, as the reference constructs them: one httpx.Client
each), writing PATH-0 .. PATH-(N-1); --once writes each token once and exits.
"""

import argparse
import os
import sys
import time
from datetime import datetime, timezone

from benchling_sdk.auth.client_credentials_oauth2 import ClientCredentialsOAuth2


def write_atomic(path: str, data: str) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--token-url", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--client-secret-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--once", action="store_true")
    a = ap.parse_args()

    with open(a.client_secret_file) as f:
        secret = f.read().strip()
    auths = [
        ClientCredentialsOAuth2(a.client_id, secret, token_url=a.token_url)
        for _ in range(a.tokens)
    ]
    paths = [a.out] if a.tokens == 1 else [f"{a.out}-{i}" for i in range(a.tokens)]
    written = [None] * a.tokens
    while True:
        for i, auth in enumerate(auths):
            header = auth.get_authorization_header(a.token_url)
            if header != written[i]:
                write_atomic(paths[i], header[len("Bearer "):])
                written[i] = header
        if a.once:
            return 0
        due = min(auth._token.refresh_time for auth in auths)
        time.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))


if __name__ == "__main__":
    sys.exit(main())
