#!/usr/bin/env python3
"""A token endpoint as an operator might write one: Python's http.server.ThreadingHTTPServer (a thread per
connection, HTTP/1.0, the connection closed after every answer). `POST /token` answers every client-credentials
request with a fresh opaque Bearer token (no credential check); `GET /stats` counts the tokens issued. Stdlib only.

    bench/py_token_server.py [--expires-in 3600] [--delay-ms 0]
    # prints READY http://127.0.0.1:<port>/token; --delay-ms answers each token request that much later

The same command line and READY line as bench/token_server.rs, so bench/measure.py starts either.
"""

import argparse
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--expires-in", type=float, default=3600)
    ap.add_argument("--delay-ms", type=float, default=0)
    a = ap.parse_args()
    lifetime = int(a.expires_in) if a.expires_in == int(a.expires_in) else a.expires_in
    lock = threading.Lock()
    issued = [0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/stats":
                with lock:
                    self.reply(200, {"issued": issued[0]})
            else:
                self.reply(404, {"error": "not_found"})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            if self.path != "/token":
                return self.reply(404, {"error": "not_found"})
            if b"grant_type=client_credentials" not in body.split(b"&"):
                return self.reply(400, {"error": "unsupported_grant_type"})
            if a.delay_ms:
                time.sleep(a.delay_ms / 1000)
            with lock:
                issued[0] += 1
            self.reply(200, {"access_token": secrets.token_urlsafe(32), "token_type": "Bearer",
                             "expires_in": lifetime})

    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"READY http://127.0.0.1:{srv.server_address[1]}/token", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
