"""A local HTTP collector for the sink tests, run as a subprocess (so a test can kill it):
every POST's headers and body are appended to a JSON-lines file, and it answers as the
collector named on the command line would (Elasticsearch _bulk: per-item results).

    python collector.py PORT OUT.jsonl [plain|elastic] [CERT.pem KEY.pem]   (the last two: HTTPS)
"""
from __future__ import annotations

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Collector(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "a", encoding="utf-8") as out:
            out.write(json.dumps({"path": self.path, "content_type": self.headers["Content-Type"],
                                  "authorization": self.headers["Authorization"],
                                  "body": body.decode("utf-8")}) + "\n")
        answer = b"{}"
        if len(sys.argv) > 3 and sys.argv[3] == "elastic":
            lines = body.decode().splitlines()
            items = [{"create": {"_id": json.loads(a)["create"]["_id"], "status": 201}} for a in lines[::2]]
            answer = json.dumps({"errors": False, "items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Collector)
    if len(sys.argv) > 5:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[4], sys.argv[5])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
