"""Shared S3 test helpers: a SigV4-checking, fault-injecting HTTP proxy.

Used by test_tape_s3.py (library level, acmfs-tapectl) and test_tape.py (the
daemon's tape tier through a mount). The proxy sits between the client and a
loopback S3 server (npm s3rver, which does not verify V4 signatures itself):

  * every request's AWS SigV4 signature and payload hash is recomputed with
    the secret below, and a PUT's x-amz-checksum-crc32 (required when the
    payload is unsigned, as S3 itself would check it) against its body; a
    mismatch is answered 403 SignatureDoesNotMatch and counted in
    Faults.bad_signatures;
  * faults are injected on demand (Faults.queue for the next requests in
    order, Faults.always for every request): "503" (SlowDown), "500"
    (InternalError), "reset" (connection shut before any response),
    "truncate" (a GET body cut in half, then the connection shut),
    "hang" (the request is taken and never answered until Faults.unhang is
    set, at most 120 s: a server that accepts and stalls),
    "corrupt" (a bit of a PUT body flipped on the way: the checksum check
    answers 400 BadDigest, as S3 does).

The upstream is s3rver or a Ceph RADOS Gateway (conftest `rgw`); RGW checks
signatures itself too, so make_proxy() takes the credentials the upstream
knows (key_id=, secret=; default the s3rver pair below) and forwards requests
unchanged (the Host header included, so the signature stays valid).
signed_request() talks to an upstream directly (RGW takes no anonymous
requests).

Loopback only (127.0.0.1).
"""
import base64
import hashlib
import hmac
import http.client
import http.server
import socket
import threading
import time
import urllib.parse
import zlib

KEY_ID = SECRET = "S3RVER"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("port %d did not open" % port)


# ---------------------------------------------------------------- the proxy

class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.queue = []        # modes for the next requests, in order
        self.always = None     # mode for every request
        self.methods = None    # None, or a set of methods faults apply to
        self.applied = []
        self.requests = 0
        self.bad_signatures = 0
        self.bad_digests = 0   # checksums that did not match an uncorrupted body
        self.unhang = threading.Event()

    def reset(self):
        with self.lock:
            self.queue, self.always, self.methods = [], None, None
            self.applied = []

    def next(self, method=None):
        with self.lock:
            self.requests += 1
            if self.methods is not None and method not in self.methods:
                return None
            if self.always:
                self.applied.append(self.always)
                return self.always
            if self.queue:
                m = self.queue.pop(0)
                if m:
                    self.applied.append(m)
                return m
            return None


def _signing_key(secret, date, region, service):
    k = ("AWS4" + secret).encode()
    for m in (date, region, service, "aws4_request"):
        k = hmac.new(k, m.encode(), hashlib.sha256).digest()
    return k


def signed_request(port, method, path, key_id, secret, region="us-east-1",
                   query="", body=b"", timeout=30):
    """One SigV4-signed request to 127.0.0.1:port; path is unencoded
    ("/bucket/key"), query an already encoded string. Returns
    (status, body bytes)."""
    body = body or b""
    enc_path = urllib.parse.quote(path, safe="/~")
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    date = amz_date[:8]
    payload = hashlib.sha256(body).hexdigest()
    host = "127.0.0.1:%d" % port
    qs = sorted(tuple(kv.split("=", 1)) if "=" in kv else (kv, "")
                for kv in query.split("&") if kv)
    cq = "&".join("%s=%s" % kv for kv in qs)
    hdrs = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = sorted(hdrs)
    ch = "".join("%s:%s\n" % (h, hdrs[h]) for h in signed)
    creq = "\n".join([method, enc_path, cq, ch, ";".join(signed), payload])
    scope = "%s/%s/s3/aws4_request" % (date, region)
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    sig = hmac.new(_signing_key(secret, date, region, "s3"), sts.encode(),
                   hashlib.sha256).hexdigest()
    hdrs["Authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
                             "Signature=%s" % (key_id, scope, ";".join(signed), sig))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, enc_path + ("?" + query if query else ""), body=body,
                     headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sigv4_check(method, raw_path, headers, body, key_id=KEY_ID, secret=SECRET):
    """Recomputes the signature of a request; returns None or a reason."""
    want_key_id = key_id
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 authorization"
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    key_id, date, region, service, term = parts["Credential"].split("/")
    signed = parts["SignedHeaders"].split(";")
    payload = headers.get("x-amz-content-sha256")
    if payload is None:
        return "no x-amz-content-sha256"
    if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
        return "payload hash mismatch"
    crc = headers.get("x-amz-checksum-crc32")
    if crc is not None:
        if "x-amz-checksum-crc32" not in signed:
            return "x-amz-checksum-crc32 not signed"
        want = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
        if crc != want:
            return "BadDigest"
    elif method == "PUT" and payload == "UNSIGNED-PAYLOAD":
        return "unsigned PUT without x-amz-checksum-crc32"
    path, _, query = raw_path.partition("?")
    qs = sorted(tuple(kv.split("=", 1)) if "=" in kv else (kv, "")
                for kv in query.split("&") if kv)
    cq = "&".join("%s=%s" % kv for kv in qs)
    ch = "".join("%s:%s\n" % (h, " ".join(headers.get(h, "").split())) for h in signed)
    creq = "\n".join([method, path, cq, ch, ";".join(signed), payload])
    amz_date = headers.get("x-amz-date", "")
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, "/".join([date, region, service, term]),
                     hashlib.sha256(creq.encode()).hexdigest()])
    k = _signing_key(secret, date, region, service)
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    if key_id != want_key_id or not hmac.compare_digest(sig, parts["Signature"]):
        return "signature mismatch"
    if "host" not in signed or "x-amz-date" not in signed:
        return "host/x-amz-date not signed"
    return None


def make_proxy(upstream_port, faults, key_id=KEY_ID, secret=SECRET):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _reply(self, status, body=b"", headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            mode = faults.next(self.command)
            if mode == "corrupt" and self.command == "PUT" and body:
                flipped = bytearray(body)      # one bit changed on the way
                flipped[len(body) // 2] ^= 0x10
                body = bytes(flipped)
            why = sigv4_check(self.command, self.path, self.headers, body,
                              key_id, secret)
            if why == "BadDigest":             # what S3 answers a wrong checksum
                if mode != "corrupt":
                    faults.bad_digests += 1
                return self._reply(400, b"<Error><Code>BadDigest</Code></Error>")
            if why:
                faults.bad_signatures += 1
                err = ("<Error><Code>SignatureDoesNotMatch</Code><Message>%s</Message>"
                       "</Error>" % why).encode()
                return self._reply(403, err)
            if mode == "hang":
                faults.unhang.wait(timeout=120)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if mode == "reset":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if mode in ("503", "500"):
                code = "SlowDown" if mode == "503" else "InternalError"
                return self._reply(int(mode), ("<Error><Code>%s</Code></Error>" % code).encode())
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
            hdrs = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if mode == "truncate" and self.command == "GET" and len(data) > 1:
                # the full length announced, half the body sent: a cut the
                # client can see (RGW answers listings chunked, without a
                # Content-Length; passing none on would make the half body
                # look complete)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            # HEAD carries the object's length without a body
            length = resp.getheader("Content-Length", "0") if self.command == "HEAD" \
                else str(len(data))
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
