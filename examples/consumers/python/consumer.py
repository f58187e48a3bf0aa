"""Calls an API with the token token-vendor vends, Python standard library only (urllib).

Pattern: cache the token until the refresh_time in token.json, then read the file again by path.
A urllib handler is the standard hook: the opener runs it for every request it sends.
"""

import datetime as dt
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import contract


class VendedTokenAuth(urllib.request.BaseHandler):
    """Sets `Authorization: Bearer <token>` from token.json, read again once its refresh_time has passed."""

    def __init__(self, token_dir):
        self._path = Path(token_dir) / "token.json"
        self._lock = threading.Lock()
        self._token = None
        self._refresh_time = None

    def token(self):
        with self._lock:
            if self._token is None or dt.datetime.now(dt.timezone.utc) >= self._refresh_time:
                # By path, every time: each refresh replaces the file with a new one.
                doc = json.loads(self._path.read_text())
                self._token = doc["access_token"]
                # "Z" is accepted by fromisoformat only from Python 3.11 on.
                self._refresh_time = dt.datetime.fromisoformat(doc["refresh_time"].replace("Z", "+00:00"))
            return self._token

    def http_request(self, req):
        # Unredirected: a redirect to another host does not carry the token along.
        req.add_unredirected_header("Authorization", f"Bearer {self.token()}")
        return req

    https_request = http_request


# --- The example contract (../contract.py): TOKEN_DIR, API_URL, DURATION in; `requests=N rejected=M` out ---


def main():
    token_dir, api_url, duration = contract.settings("python")
    opener = urllib.request.build_opener(VendedTokenAuth(token_dir))

    def call():
        try:
            with opener.open(api_url, timeout=5) as resp:
                resp.read(64 * 1024)
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            return str(e)
        return None

    contract.drive("python", duration, call)


if __name__ == "__main__":
    main()
