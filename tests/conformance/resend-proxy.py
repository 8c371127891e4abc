#!/usr/bin/env python3
"""A loopback-only HTTP proxy that loses messages on purpose, for client-test's ResendProxy suite.

    resend-proxy.py --base PORT

client-test's TransportResendProxy (enabled with CLIENT_TEST_RESEND_PROXY=PORT) sends the
message it wants to disturb through an HTTP proxy on 127.0.0.1:PORT+N; N picks the fault:

    N = 0   forward the request and the reply unchanged
    N = 1   lose the request: read it, then close the client's connection without an answer
    N = 2   lose the reply: pass the request to the server, close that connection without
            reading the reply, and tell the client "501 Gateway error"
    N = 3   cut the reply: read the server's whole reply, give the client only its status line
            and headers, then close

SyncEvolution's own test/proxy.py does the same with Twisted and listens on every interface;
this one needs only the standard library, listens on 127.0.0.1 and forwards only to loopback
addresses. It logs one line per event to stdout.
"""

import argparse
import http.client
import http.server
import socket
import sys
import threading
import urllib.parse

LOOPBACK = ("127.0.0.1", "::1", "localhost")
FORWARD, LOSE_REQUEST, LOSE_REPLY, CUT_REPLY = range(4)
MODE_NAMES = ("forward", "lose-request", "lose-reply", "cut-reply")
# headers that describe one hop, not the message
HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
               "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade", "expect"}


def log(mode, text):
    sys.stdout.write("%s %s\n" % (MODE_NAMES[mode], text))
    sys.stdout.flush()


class FaultyProxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = FORWARD  # set per listening port (subclass)

    def log_message(self, fmt, *args):
        log(self.mode, fmt % args)

    def read_body(self):
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def target(self):
        """(host, port, path) of the absolute URI the client asked for; loopback only."""
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in LOOPBACK:
            raise ValueError("not a loopback http URL: %r" % self.path)
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        return url.hostname, url.port or 80, path

    def forwarded_headers(self, host, port, body):
        """The request headers as the server gets them: end-to-end ones only, one connection."""
        headers = [("Host", "%s:%d" % (host, port))]
        headers += [(k, v) for k, v in self.headers.items()
                    if k.lower() not in HOP_HEADERS and k.lower() not in ("host", "content-length")]
        headers += [("Content-Length", str(len(body))), ("Connection", "close")]
        return headers

    def answer(self, code, reason, body=b"", content_type="text/plain", close=True):
        self.send_response(code, reason)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.read_body()
        log(self.mode, "%s %s, %d bytes" % (self.command, self.path, len(body)))
        if self.mode == LOSE_REQUEST:
            log(self.mode, "dropping the request, closing the client connection")
            self.close_connection = True
            return
        try:
            host, port, path = self.target()
            headers = self.forwarded_headers(host, port, body)
            if self.mode == LOSE_REPLY:
                head = "%s %s HTTP/1.1\r\n" % (self.command, path)
                head += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
                with socket.create_connection((host, port), timeout=60) as upstream:
                    upstream.sendall(head.encode("latin-1") + body)
                log(self.mode, "request delivered, reply not read; 501 to the client")
                self.answer(501, "Gateway error",
                            b"connection intentionally interrupted after sending and before receiving")
                return
            conn = http.client.HTTPConnection(host, port, timeout=600)
            try:
                conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(body)
                reply = conn.getresponse()
                data = reply.read()
            finally:
                conn.close()
        except (OSError, ValueError, http.client.HTTPException) as err:
            log(self.mode, "cannot forward: %s" % err)
            self.answer(502, "Bad Gateway", str(err).encode())
            return
        log(self.mode, "reply %d, %d bytes" % (reply.status, len(data)))
        self.send_response(reply.status, reply.reason)
        for name, value in reply.getheaders():
            if name.lower() not in HOP_HEADERS and name.lower() not in ("content-length", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if self.mode == CUT_REPLY:
            log(self.mode, "sending the reply's head only, then closing")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=int, required=True, help="first of the four ports")
    args = parser.parse_args()
    servers = []
    for mode in range(4):
        handler = type("FaultyProxy%d" % mode, (FaultyProxy,), {"mode": mode})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.base + mode), handler)
        server.daemon_threads = True
        servers.append(server)
        log(mode, "listening on 127.0.0.1:%d" % (args.base + mode))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
