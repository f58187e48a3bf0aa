"""Calls an API through the Benchling SDK with the token token-vendor vends: the app keeps its SDK and drops the secret.

Pattern: read token.header by path for every request. The SDK asks its AuthorizationMethod for the header before each
request, so replacing ClientCredentialsOAuth2(client_id, client_secret) with this class is the whole change.
"""

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from benchling_api_client.v2.benchling_client import AuthorizationMethod
from benchling_sdk.benchling import Benchling
from benchling_sdk.errors import BenchlingError


class VendedTokenAuth(AuthorizationMethod):
    """The `Authorization` header token-vendor wrote (`Bearer <token>`), read by path on every call."""

    def __init__(self, token_dir):
        self._path = Path(token_dir) / "token.header"

    def get_authorization_header(self, base_url: str) -> str:
        return self._path.read_text()


# --- The example contract (TOKEN_DIR, API_URL, DURATION in; `requests=N rejected=M` out) ---


def main():
    try:
        token_dir, api_url = os.environ["TOKEN_DIR"], os.environ["API_URL"]
        duration = float(os.environ["DURATION"])
    except (KeyError, ValueError) as e:
        sys.exit(f"benchling: set TOKEN_DIR, API_URL and DURATION (seconds): {e!r}")
    url = urlsplit(api_url)
    # In an app: Benchling(url="https://tenant.benchling.com", auth_method=VendedTokenAuth("/var/run/tokens/benchling")).
    benchling = Benchling(url=f"{url.scheme}://{url.netloc}", auth_method=VendedTokenAuth(token_dir))
    path = url.path + (f"?{url.query}" if url.query else "")
    requests = rejected = 0
    start = time.monotonic()
    while time.monotonic() < start + duration:
        requests += 1
        try:
            benchling.api.get_response(url=path)
        except BenchlingError as e:
            rejected += 1
            if rejected <= 3:
                print(f"benchling: request {requests}: HTTP {e.status_code}", file=sys.stderr)
        except (httpx.HTTPError, OSError) as e:
            rejected += 1
            if rejected <= 3:
                print(f"benchling: request {requests}: {e}", file=sys.stderr)
        # Ten a second, on a fixed schedule, so a slow answer does not lower the rate.
        time.sleep(max(0.0, start + requests * 0.1 - time.monotonic()))
    print(f"requests={requests} rejected={rejected}")


if __name__ == "__main__":
    main()
