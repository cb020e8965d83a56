"""``rnnlab serve RUN``: a local web page for looking inside a trained run.

    rnnlab serve runs/tm                  # then open http://127.0.0.1:8000/
    rnnlab serve runs/tm --port 0         # any free port; the URL is printed

The page (see :mod:`rnnlab.web`) streams generated text as it comes, shades a passage by
how much each token surprised the model and shows what it expected instead, shades the
passage by any hidden unit, ranks the units that follow a feature, and plots the training
curve. It runs on the standard library's ThreadingHTTPServer, a thread per connection.

Bounds. At most MAX_CONNECTIONS connections are open at once: one more is answered 503
and closed. A reading (/api/read, /api/unit, /api/rank) is made by one thread, one at a
time, its answer included; READINGS_WAITING more requests wait their turn, and one more
is answered 503 with Retry-After. A reading's size grows with the text (T * L * H
floats per kind of state, 20,000 characters at most), and at most READINGS_KEPT of them
are held, the one being made included. Generation runs on its own copy of the model, so
a long reading never holds it up; streams take turns on that copy, token by token.

Routes. An API route takes its parameters from the query string (GET) or from a JSON
object in the body (POST); ``text`` defaults to the start of the validation split.

    GET /  /page.css  /page.js           the page
    /api/info                            the run, the model's shape, features, limits, default text
    /api/read      text                  tokens, probabilities, top 5 per position, loss per token
    /api/unit      text layer kind unit  one unit's activation at every token
    /api/rank      text feature pattern  the units whose activations follow a feature most closely
    /api/training                        the configuration and the history, epoch by epoch
    /api/generate  prefix length temperature top_k seed   text/plain, sent as it is generated

A bad parameter is answered 400 with a JSON ``{"error": message}``, any other path 404.
The URL is read as UTF-8 (percent-escaped or not). Nothing is read from disk while
serving: the page's three files are read once, by name.

DNS rebinding: a web page the user visits could point a name of its own at this server
and read the API. Every request's Host must be an IP address, localhost, this machine's
name, the name the server was started with, or a name given with ``--allow-host``.
"""

from __future__ import annotations

import copy
import errno
import json
import queue
import re
import socket
import socketserver
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from . import web
from .errors import RnnlabError
from .files import KIB, MIB
from .lens import Lens, Reading
from .serve_checks import (
    Params,
    allowed_host,
    api_terms,
    host_name,
    is_loopback,
    own_names,
    shown,
)

# A request body holds at most one text (MAX_TEXT_CHARS characters, 20,000): even with
# every character escaped in JSON it fits with room to spare.
BODY_LIMIT = 256 * KIB
DRAIN_LIMIT = 4 * MIB  # a larger body than this is not even read: the connection is closed
IDLE_SECONDS = 120  # an idle keep-alive connection frees its thread after this
MAX_CONNECTIONS = 32  # open at once (a thread each); a browser opens about 6 per server
# Readings are made by one thread, one at a time (the model reads one text at a time
# anyway, so a second at once would only double the memory), with their answers (a
# reading's JSON is large).
READINGS_WAITING = 8  # requests that wait for their turn; one more is answered 503
READINGS_KEPT = 2  # readings held, the one being made included: unit after unit reads once
RETRY_SECONDS = 5  # the Retry-After of a 503
# The routes that need a reading of their text, each computed in a turn.
READING_ROUTES = ("/api/read", "/api/unit", "/api/rank")

# The page's URLs and the file each one sends (the only files the server ever reads).
STATIC = {"/": "page.html", "/page.css": "page.css", "/page.js": "page.js"}
# The page runs only its own script and talks only to this server.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
JSON_MEDIA = "application/json; charset=utf-8"


class _Busy(Exception):
    """The reader is busy and its line is full: the request is answered 503."""


class _Reader:
    """One thread that does the heavy work (readings and their answers), one job at a time,
    for up to ``waiting`` more jobs in line; a job that finds the line full is refused
    (:class:`_Busy`), so the requests in the server, and the memory they hold, stay bounded.

    One thread, not the thread of each request: the C allocator keeps memory a thread
    freed in that thread's arena, so readings made by a dozen threads would hold a dozen
    readings' worth of memory long after they were let go.
    """

    def __init__(self, waiting: int):
        self._jobs: queue.Queue[_Job] = queue.Queue(maxsize=waiting)
        threading.Thread(target=self._work, name="rnnlab-reader", daemon=True).start()

    def run(self, work: Callable[[], bytes]) -> bytes:
        """What ``work`` returns (or raises), done on the reader's thread in its turn."""
        job = _Job(work)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise _Busy from None
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.result = job.work()
            except Exception as e:  # raised again in the request's own thread
                job.error = e
            finally:
                job.done.set()


class _Job:
    """A piece of work for the reader, and what came of it."""

    def __init__(self, work: Callable[[], bytes]):
        self.work, self.result = work, b""
        self.error: Exception | None = None
        self.done = threading.Event()


class _App:
    """What the routes share: the Lens that reads texts, a second Lens (its own copy of the
    model) that generates, the run's facts, and the readings of recent texts."""

    def __init__(self, lens: Lens, run: Path, which: str):
        self.lens = lens
        # Its own model and lock: a 20,000-character reading (minutes on a busy machine)
        # never holds up the text streaming to another page.
        self.writer = Lens(lens.cfg, lens.vocab, copy.deepcopy(lens.model), lens.history)
        self.info = web.info(lens, run, which)
        self.default_text = lens.default_text()
        self.reader = _Reader(READINGS_WAITING)
        self._recent: OrderedDict[str, Reading] = OrderedDict()
        self._lock = threading.Lock()

    def text(self, params: Params) -> str:
        text = params.text("text")
        return self.default_text if text is None else text

    def reading(self, text: str) -> Reading:
        """The Lens's reading of ``text``, from the recent ones when it was just read.

        Called by the reader (:attr:`reader`), one at a time. The oldest reading is let go
        before a new one is made, so that at most READINGS_KEPT are ever held.
        """
        with self._lock:
            if text in self._recent:
                self._recent.move_to_end(text)
                return self._recent[text]
            while len(self._recent) >= READINGS_KEPT:
                self._recent.popitem(last=False)
        reading = self.lens.read(text)
        with self._lock:
            self._recent[text] = reading
            while len(self._recent) > READINGS_KEPT:
                self._recent.popitem(last=False)
        return reading


def _info(app: _App, params: Params) -> dict[str, Any]:
    return {**app.info, "text": app.default_text}


def _read(app: _App, params: Params) -> dict[str, Any]:
    return web.reading_json(app.reading(app.text(params)))


def _unit(app: _App, params: Params) -> dict[str, Any]:
    layer, unit = params.integer("layer", 1), params.integer("unit", 0)
    kind = params.text("kind") or "h"
    reading = app.reading(app.text(params))
    values = web.unit_values(reading, layer, kind, unit)
    return {"layer": layer, "kind": kind, "unit": unit, "values": values}


def _rank(app: _App, params: Params) -> dict[str, Any]:
    feature, pattern = params.text("feature"), params.text("pattern")
    if feature is None:
        raise RnnlabError(f"give a feature: one of {', '.join(web.FEATURES)}")
    reading = app.reading(app.text(params))
    return {"feature": feature, "units": app.lens.rank_units(reading, feature, pattern or None)}


def _training(app: _App, params: Params) -> dict[str, Any]:
    return app.lens.training()


def _generation(app: _App, params: Params) -> Generator[str, None, None]:
    """The prompt, then a piece per generated token. Nothing runs until the first piece is
    asked for, and closing this closes the Lens's stream (``yield from`` passes it on)."""
    prefix = params.text("prefix")
    yield from app.writer.stream(
        app.info["prefix"] if prefix is None else prefix,
        params.integer("length", 100),
        params.number("temperature", 0.0),
        params.integer("top_k", 0),
        params.optional_integer("seed"),
    )


# path -> (the route, the parameters it takes); /api/generate streams, the others answer JSON.
ROUTES: dict[str, tuple[Callable[[_App, Params], Any], tuple[str, ...]]] = {
    "/api/info": (_info, ()),
    "/api/read": (_read, ("text",)),
    "/api/unit": (_unit, ("text", "layer", "kind", "unit")),
    "/api/rank": (_rank, ("text", "feature", "pattern")),
    "/api/training": (_training, ()),
    "/api/generate": (_generation, ("prefix", "length", "temperature", "top_k", "seed")),
}


def _encoded(value: Any) -> bytes:
    """A JSON answer's bytes."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    """One connection: static files by name, the API, a JSON error for anything wrong."""

    protocol_version = "HTTP/1.1"  # keep-alive, and chunked bodies for the streamed text
    timeout = IDLE_SECONDS
    server_version = "rnnlab"
    sys_version = ""
    server: _Server
    raw_requestline: bytes

    def parse_request(self) -> bool:
        # http.server reads the request line as Latin-1 and splits it at any whitespace,
        # "\xa0" and "\x85" included: raw UTF-8 in a URL (curl sends "voilà" unescaped, its
        # "à" is C3 A0) would split it. Percent-escaped, every byte reads as it was sent.
        self.raw_requestline = re.sub(
            rb"[\x80-\xff]", lambda byte: b"%%%02X" % byte[0][0], self.raw_requestline
        )
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, headers too long, a method
        other than GET and POST) as the API's are: a JSON message, on one line."""
        reason = self.responses.get(code, ("Error", ""))[0]
        self.log_error("code %d, message %s", code, message or reason)
        self.close_connection = True
        self.send_response(code, reason)
        if code < 200 or code in (204, 304):  # no body allowed
            self.send_header("Connection", "close")
            self.end_headers()
            return
        body = _encoded({"error": (message or reason).replace("\n", " ")})
        self.send_header("Content-Type", JSON_MEDIA)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond()

    def do_POST(self) -> None:
        self._respond()

    def _respond(self) -> None:
        self._sent = False
        takes: tuple[str, ...] = ()
        try:
            body = self._body()  # first: bytes left unread would be taken for a request
            url = urlsplit(self.path)
            if not self._host_allowed():
                self._json(403, {"error": self._host_refusal()})
            elif url.path in STATIC and self.command != "GET":
                self._json(405, {"error": f"{url.path} is read with GET"}, {"Allow": "GET"})
            elif url.path in STATIC:
                name = STATIC[url.path]
                headers = {"Content-Security-Policy": PAGE_POLICY} if name == "page.html" else {}
                self._send(200, self.server.assets[name], web.ASSETS[name], headers)
            elif url.path in ROUTES:
                route, takes = ROUTES[url.path]
                params = Params(self._values(url.query, body))
                unknown = sorted(set(params.values) - set(takes))
                if unknown:
                    expected = ", ".join(takes) if takes else "no parameters"
                    raise RnnlabError(
                        f"unknown parameter {unknown[0]!r}; {url.path} takes {expected}"
                    )
                app = self.server.app
                if url.path == "/api/generate":
                    self._stream(route(app, params))
                elif url.path in READING_ROUTES:  # the reading and its answer, by the reader
                    answer = app.reader.run(lambda: _encoded(route(app, params)))
                    self._send(200, answer, JSON_MEDIA)
                else:
                    self._json(200, route(app, params))
            else:
                self._json(404, {"error": f"no such page: {url.path[:100]}"})
        except RnnlabError as e:
            if self._sent:  # mid-stream: all a client can still be told is that the text broke off
                self.close_connection = True
            else:
                self._json(400, {"error": api_terms(str(e), takes)})
        except _Busy:
            self._json(
                503,
                {"error": f"busy reading other texts; try again in {RETRY_SECONDS} s"},
                {"Retry-After": str(RETRY_SECONDS)},
            )
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away
        except Exception:
            self.server.log(traceback.format_exc().rstrip())
            self.close_connection = True
            if not self._sent:
                self._json(500, {"error": "internal error in rnnlab serve (see its terminal)"})

    def _body(self) -> bytes:
        """The request's body (empty if none). After a body that is refused the connection
        closes: bytes left unread would be taken for the next request."""
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise RnnlabError("send the request body with a Content-Length, not chunked")
        length = self.headers.get("Content-Length", "0").strip()
        if not (length.isascii() and length.isdigit() and len(length) <= 15):
            self.close_connection = True
            raise RnnlabError(f"bad Content-Length {shown(length)}")
        if int(length) > BODY_LIMIT:
            self.close_connection = True
            # Read and drop it first: closing a socket with unread bytes resets the
            # connection, and the client could lose the answer.
            left = min(int(length), DRAIN_LIMIT)
            while left > 0 and (chunk := self.rfile.read(min(left, 64 * KIB))):
                left -= len(chunk)
            raise RnnlabError(f"the request body is over the {BODY_LIMIT // KIB} KiB limit")
        return self.rfile.read(int(length))

    def _values(self, query: str, body: bytes) -> dict[str, Any]:
        """The parameters: the query string's of a GET, the JSON object's of a POST."""
        if self.command == "GET":
            try:
                fields = parse_qs(query, keep_blank_values=True, errors="strict", max_num_fields=20)
            except ValueError:
                raise RnnlabError(
                    "the query string is not valid: not UTF-8, or over 20 fields"
                ) from None
            for name, values in fields.items():
                if len(values) > 1:
                    raise RnnlabError(f"give the parameter {name!r} once")
            return {name: values[0] for name, values in fields.items()}
        if not body.strip():
            return {}
        try:
            values = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RnnlabError("the request body is not valid JSON") from None
        if not isinstance(values, dict):
            raise RnnlabError("the request body must be a JSON object of parameters")
        return values

    def _host_allowed(self) -> bool:
        """Whether the Host the request names is one of this server's (see the module's
        docstring). A request without one (HTTP/1.0) comes from no browser."""
        host = self.headers.get("Host")
        return host is None or allowed_host(host_name(host), self.server.names)

    def _host_refusal(self) -> str:
        name = host_name(self.headers.get("Host", ""))
        return (
            f"this server answers only to localhost, this machine's names and addresses and "
            f"--allow-host names, not to {shown(name)}; start it with --allow-host NAME "
            f"if the name is yours"
        )

    def _send(
        self, status: int, body: bytes, media: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers(headers)
        self._sent = True
        self.wfile.write(body)

    def _common_headers(self, headers: dict[str, str] | None) -> None:
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, _encoded(value), JSON_MEDIA, headers)

    def _stream(self, pieces: Generator[str, None, None]) -> None:
        """Send text in HTTP/1.1 chunks as it comes, one chunk per piece."""
        try:
            first = next(pieces, "")  # a bad parameter raises here, while a 400 can be sent
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self._common_headers(None)
            self._sent = True
            self._chunk(first)
            for piece in pieces:
                self._chunk(piece)
            self.wfile.write(b"0\r\n\r\n")
        finally:
            pieces.close()  # a client that left mid-stream frees the model at once

    def _chunk(self, piece: str) -> None:
        data = piece.encode("utf-8")
        if data:  # an empty chunk would end the body
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(f"{self.address_string()} {format % args}")


class _Server(ThreadingHTTPServer):
    """The HTTP server of one run's page: a thread per connection, at most MAX_CONNECTIONS
    of them, and one shared _App. ``names``: the Host names it answers to."""

    daemon_threads = True  # a connection still open never holds up Ctrl-C ...
    block_on_close = False  # ... nor the server's close
    allow_reuse_port = False  # a port in use is an error, never shared

    def __init__(self, address: tuple[str, int], app: _App, err: TextIO, names: frozenset[str]):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app, self.names, self._err, self._log_lock = app, names, err, threading.Lock()
        self.assets = {name: web.asset(name) for name in web.ASSETS}
        self._open, self._open_lock = 0, threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start the connection's thread, or refuse it when MAX_CONNECTIONS are open."""
        with self._open_lock:
            full = self._open >= MAX_CONNECTIONS
            if not full:
                self._open += 1
        if full:
            self._refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the connection is not open
            self._closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed()

    def _closed(self) -> None:
        with self._open_lock:
            self._open -= 1

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        """Answer 503 and close, from the accepting thread: the answer is sent without
        waiting (a new connection's buffer has room for it) and the request is not read."""
        body = _encoded(
            {"error": f"{MAX_CONNECTIONS} connections are open; try again in {RETRY_SECONDS} s"}
        )
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {JSON_MEDIA}\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_SECONDS}\r\n"
            f"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        try:
            request.setblocking(False)
            request.sendall(head.encode("ascii") + body)
        except OSError:
            pass  # the client is gone or not reading: closing is all there is to do
        self.shutdown_request(request)
        self.log(f"{client_address[0]} refused: {MAX_CONNECTIONS} connections are open")

    def server_bind(self) -> None:
        # TCPServer's bind without HTTPServer's getfqdn, a DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def log(self, message: str) -> None:
        """One line (a traceback: several) on the server's error stream, control characters
        escaped (a request line is the client's text)."""
        lines = message.splitlines() or [""]
        escaped = "\n".join(
            "".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in lines
        )
        with self._log_lock:
            print(escaped, file=self._err, flush=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # the client went away
        self.log(f"{client_address[0]} error: {type(error).__name__}: {error}")


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _bind_error(host: str, port: int, e: OSError) -> RnnlabError:
    """The one-line message for a host and port the server can't listen on."""
    if e.errno == errno.EADDRINUSE:
        return RnnlabError(
            f"port {port} on {host} is in use; choose another with --port (0 picks a free one)"
        )
    if e.errno == errno.EACCES:
        return RnnlabError(
            f"not allowed to listen on port {port} ({e.strerror}); choose --port 1024 or above"
        )
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        return RnnlabError(
            f"cannot listen on host {host!r} ({e.strerror}); give an address of this "
            f"machine, such as 127.0.0.1"
        )
    return RnnlabError(f"cannot listen on {host} port {port}: {e.strerror or e}")


def serve(
    run: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    which: str = "best",
    out: TextIO | None = None,
    err: TextIO | None = None,
    ready: Callable[[tuple[str, int]], None] | None = None,
    allow_hosts: Sequence[str] = (),
) -> int:
    """Serve the inspection page of the run directory ``run`` until Ctrl-C; returns 0.

    ``which`` is the checkpoint ("best" or "latest"). ``allow_hosts``: more names the page
    answers to (a reverse proxy's), besides localhost, this machine's name, ``host`` and
    any IP address. The URL goes to ``out`` (default stdout); a warning if ``host`` is
    reachable from other machines, and one line per request, go to ``err`` (default
    stderr). ``ready`` is called with the bound (host, port) once the server listens (with
    ``port`` 0, the port the system chose).
    A port in use, or a host that isn't this machine's, is an RnnlabError.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if not 0 <= port <= 65535:
        raise RnnlabError(f"--port must be from 0 to 65535, not {port}")
    try:
        lens = Lens.from_run(Path(run), which)
        app = _App(lens, Path(run), which)
        try:
            server = _Server((host, port), app, err, own_names(host, allow_hosts))
        except OSError as e:
            raise _bind_error(host, port, e) from None
        with server:
            bound = (str(server.server_address[0]), int(server.server_address[1]))
            print(f"serving {run} at {_url(*bound)}  (Ctrl-C stops)", file=out, flush=True)
            if not is_loopback(host):
                print(
                    f"rnnlab serve: warning: listening on {host}: other machines can reach "
                    f"this page and the model; use --host 127.0.0.1 to keep it local",
                    file=err,
                    flush=True,
                )
            if ready is not None:
                ready(bound)
            server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=out, flush=True)
    return 0
