"""A real webhook receiver for the tests: a threaded HTTP server on 127.0.0.1
that plays the customer's application.

Every request is recorded (method, path, the full URL as the receiving
application sees it, headers, parsed parameters, raw body) and its
X-Twilio-Signature is checked with the SDK's own RequestValidator, using the
auth token of the account named by the AccountSid parameter (or, when a
request carries no AccountSid, any known account).  For POST the parameters
are the form body; for GET the parameters are {} and the URL carries the query
(that is how Twilio signs GET webhooks).

Per-path behaviours are set with receiver.set(path, ...): TwiML to answer (a
string or a callable taking the Request), content type, status, a delay, "fail
N times then succeed", or closing the connection without an answer."""

import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twilio.request_validator import RequestValidator

from .util import wait_for


@dataclass
class Request:
    method: str
    path: str              # path + query as sent on the request line
    route: str             # path without the query (the key for behaviours)
    url: str               # http://127.0.0.1:PORT + path
    headers: dict          # lower-cased names -> value
    query: dict            # name -> [values]
    form: dict             # name -> [values] (POST form bodies)
    body: bytes
    signature: str = None
    valid: bool = False
    signed_by: str = None  # account SID whose token validated the signature
    duplicate_keys: list = field(default_factory=list)
    t: float = 0.0         # time.monotonic() at arrival

    @property
    def params(self):
        """The Twilio parameters of this request, first value per name: the
        form body for POST, the query string for GET."""
        src = self.form if self.method == "POST" else self.query
        return {k: v[0] for k, v in src.items()}

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)


@dataclass
class Behaviour:
    twiml: object = "<Response/>"        # str, bytes or callable(Request) -> str
    content_type: str = "text/xml"
    status: int = 200
    delay: float = 0.0                   # seconds before answering
    fail_times: int = 0                  # first N requests fail ...
    fail_with: object = 500              # ... with this status, or "close"
    close: bool = False                  # always close without an answer
    hits: int = 0


class _Server(ThreadingHTTPServer):
    # A restart that ends hundreds of calls at once sends their callbacks
    # together: with socketserver's default listen backlog of 5 the excess
    # connections wait for SYN retransmits and twigate's deliveries time
    # out (11205) on the receiver's account, not twigate's.
    request_queue_size = 512


class WebhookReceiver:
    def __init__(self, accounts=None, host="127.0.0.1", port=0):
        """accounts: {AccountSid: auth_token} used to validate signatures."""
        self.accounts = dict(accounts or {})
        self._lock = threading.Lock()
        self._requests = []
        self._behaviours = {}
        self._default = Behaviour()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # keep pytest output clean
                pass

            def _handle(self):
                receiver._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server = _Server((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ setup
    def url(self, path="/"):
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    def add_accounts(self, accounts):
        with self._lock:
            self.accounts.update(accounts)

    def set(self, route, twiml=None, **kw):
        """Sets the behaviour for a path (without query string).  Keyword
        arguments are Behaviour fields; unspecified fields keep their current
        value when the route already has a behaviour."""
        with self._lock:
            b = self._behaviours.get(route)
            if b is None:
                b = Behaviour()
                self._behaviours[route] = b
            if twiml is not None:
                b.twiml = twiml
            for k, v in kw.items():
                if not hasattr(b, k):
                    raise TypeError(f"unknown behaviour {k}")
                setattr(b, k, v)
            return b

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    # --------------------------------------------------------------- queries
    def requests(self, route=None, call_sid=None, predicate=None):
        with self._lock:
            out = list(self._requests)
        if route is not None:
            out = [r for r in out if r.route == route]
        if call_sid is not None:
            out = [r for r in out if r.params.get("CallSid") == call_sid]
        if predicate is not None:
            out = [r for r in out if predicate(r)]
        return out

    def wait_for_requests(self, route=None, count=1, timeout=10.0, call_sid=None,
                          predicate=None):
        def enough():
            got = self.requests(route, call_sid, predicate)
            return got if len(got) >= count else None
        try:
            return wait_for(enough, timeout)
        except AssertionError:
            got = self.requests(route, call_sid, predicate)
            raise AssertionError(
                f"expected >= {count} request(s) on {route!r} (call {call_sid}), got "
                f"{len(got)}: {[(r.method, r.path, r.params.get('CallStatus')) for r in got]}; "
                f"all routes seen: {sorted({r.route for r in self.requests()})}")

    def assert_all_valid(self):
        bad = [r for r in self.requests() if not r.valid]
        assert not bad, "requests with a bad/missing X-Twilio-Signature: " + "; ".join(
            f"{r.method} {r.url} sig={r.signature!r} params={r.params}" for r in bad)

    # -------------------------------------------------------------- handling
    def _dispatch(self, h):
        arrived = time.monotonic()
        length = h.headers.get("Content-Length")
        body = b""
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked(h.rfile)
        elif length:
            body = h.rfile.read(int(length))
        path = h.path
        split = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        form = {}
        dups = []
        ctype = h.headers.get("Content-Type", "")
        if h.command == "POST" and ctype.split(";")[0].strip().lower() == \
                "application/x-www-form-urlencoded":
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            for k, v in pairs:
                if k in form:
                    dups.append(k)
                form.setdefault(k, []).append(v)
        headers = {k.lower(): v for k, v in h.headers.items()}
        req = Request(method=h.command, path=path, route=split.path,
                      url=self.base_url + path, headers=headers, query=query,
                      form=form, body=body, duplicate_keys=dups, t=arrived)
        req.signature = headers.get("x-twilio-signature")
        self._validate(req)
        with self._lock:
            self._requests.append(req)
            b = self._behaviours.get(req.route, self._default)
            b.hits += 1
            hit = b.hits
            snapshot = Behaviour(**{k: getattr(b, k) for k in b.__dataclass_fields__})
        self._respond(h, req, snapshot, hit)

    def _validate(self, req):
        if not req.signature:
            return
        params = req.params if req.method == "POST" else {}
        sid = req.params.get("AccountSid")
        with self._lock:
            if sid is not None and sid in self.accounts:
                candidates = [(sid, self.accounts[sid])]
            else:
                candidates = list(self.accounts.items())
        for acct, token in candidates:
            if RequestValidator(token).validate(req.url, params, req.signature):
                req.valid = True
                req.signed_by = acct
                return

    @staticmethod
    def _read_chunked(rfile):
        out = b""
        while True:
            line = rfile.readline().strip()
            n = int(line.split(b";")[0], 16)
            if n == 0:
                rfile.readline()
                return out
            out += rfile.read(n)
            rfile.readline()

    def _respond(self, h, req, b, hit):
        try:
            if b.delay:
                time.sleep(b.delay)
            if b.close or (hit <= b.fail_times and b.fail_with == "close"):
                h.close_connection = True
                return
            if hit <= b.fail_times:
                status, ctype, payload = int(b.fail_with), "text/plain", b"failure\n"
            else:
                twiml = b.twiml(req) if callable(b.twiml) else b.twiml
                payload = twiml.encode() if isinstance(twiml, str) else (twiml or b"")
                status, ctype = b.status, b.content_type
            h.send_response(status)
            if ctype:
                h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            h.close_connection = True
