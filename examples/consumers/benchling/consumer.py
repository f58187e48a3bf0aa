"""Calls an API through the Benchling SDK with the token token-vendor vends: the app keeps its SDK and drops the secret.

Pattern: read token.header by path for every request. The SDK asks its AuthorizationMethod for the header before each
request, so replacing ClientCredentialsOAuth2(client_id, client_secret) with this class is the whole change.
"""

from pathlib import Path
from urllib.parse import urlsplit

import httpx
from benchling_api_client.v2.benchling_client import AuthorizationMethod
from benchling_sdk.benchling import Benchling
from benchling_sdk.errors import BenchlingError

import contract


class VendedTokenAuth(AuthorizationMethod):
    """The `Authorization` header token-vendor wrote (`Bearer <token>`), read by path on every call."""

    def __init__(self, token_dir):
        self._path = Path(token_dir) / "token.header"

    def get_authorization_header(self, base_url: str) -> str:
        return self._path.read_text()


# --- The example contract (../contract.py): TOKEN_DIR, API_URL, DURATION in; `requests=N rejected=M` out ---


def main():
    token_dir, api_url, duration = contract.settings("benchling")
    url = urlsplit(api_url)
    # In an app: Benchling(url="https://tenant.benchling.com", auth_method=VendedTokenAuth("/var/run/tokens/benchling")).
    benchling = Benchling(url=f"{url.scheme}://{url.netloc}", auth_method=VendedTokenAuth(token_dir))
    path = url.path + (f"?{url.query}" if url.query else "")

    def call():
        try:
            benchling.api.get_response(url=path)
        except BenchlingError as e:
            return f"HTTP {e.status_code}"
        except (httpx.HTTPError, OSError) as e:
            return str(e)
        return None

    contract.drive("benchling", duration, call)


if __name__ == "__main__":
    main()
