"""An HTTP endpoint that answers every request 401 (an expired bearer token), for auth tests.

Usage: python unauthorized.py PORT [--echo]; ``--echo`` puts the request's Authorization header in
the body, so a test can prove the daemon never shows what a server echoes back.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

ECHO = "--echo" in sys.argv[2:]


class Deny(BaseHTTPRequestHandler):
    def _deny(self) -> None:
        got = self.headers.get("Authorization", "")
        answer = {"error": "invalid_token", **({"got": got} if ECHO else {})}
        body = json.dumps(answer).encode()
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _deny

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Deny).serve_forever()
