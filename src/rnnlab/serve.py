"""``rnnlab serve RUN``: a local web page for looking inside a trained run.

    rnnlab serve runs/tm                  # then open http://127.0.0.1:8000/
    rnnlab serve runs/tm --port 0         # any free port; the URL is printed

The page (see :mod:`rnnlab.web`) streams generated text as it comes, shades a passage by
how much each token surprised the model and shows what it expected instead, shades the
passage by any hidden unit, ranks the units that follow a feature, and plots the training
curve. It runs on the standard library's ThreadingHTTPServer; every request shares one
Lens, which guards the model with a lock.

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
Nothing is read from disk while serving: the page's three files are read once, by name.
"""

from __future__ import annotations

import errno
import json
import math
import socket
import socketserver
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Generator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from . import web
from .errors import RnnlabError
from .files import KIB, MIB
from .lens import Lens, Reading

# Hosts that only this machine can reach; any other gets a warning.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# A request body holds at most one text (MAX_TEXT_CHARS characters, 20,000): even with
# every character escaped in JSON it fits with room to spare.
BODY_LIMIT = 256 * KIB
DRAIN_LIMIT = 4 * MIB  # a larger body than this is not even read: the connection is closed
READINGS_KEPT = 2  # texts whose readings are kept, so unit after unit reads the text once
IDLE_SECONDS = 120  # an idle keep-alive connection frees its thread after this

# The page's URLs and the file each one sends (the only files the server ever reads).
STATIC = {"/": "page.html", "/page.css": "page.css", "/page.js": "page.js"}
# The page runs only its own script and talks only to this server.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _shown(value: Any) -> str:
    """A parameter's value as an error message quotes it: short, and on one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Params:
    """A request's parameters, each converted and checked as a route takes it."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise RnnlabError(f"{name} must be text, not {_shown(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RnnlabError(f"{name} is not valid Unicode text (a lone surrogate)") from None
        return value

    def optional_integer(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RnnlabError(f"{name} must be a whole number, not {_shown(value)}")

    def integer(self, name: str, default: int) -> int:
        value = self.optional_integer(name)
        return default if value is None else value

    def number(self, name: str, default: float) -> float:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        number = None
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        if number is None or not math.isfinite(number):
            raise RnnlabError(f"{name} must be a finite number, not {_shown(value)}")
        return number


class _App:
    """What the routes share: the Lens, the run's facts, and the readings of recent texts."""

    def __init__(self, lens: Lens, run: Path, which: str):
        self.lens = lens
        self.info = web.info(lens, run, which)
        self.default_text = lens.default_text()
        self._recent: OrderedDict[str, Reading] = OrderedDict()
        self._lock = threading.Lock()

    def text(self, params: _Params) -> str:
        text = params.text("text")
        return self.default_text if text is None else text

    def reading(self, text: str) -> Reading:
        """The Lens's reading of ``text``, from the recent ones when it was just read."""
        with self._lock:
            if text in self._recent:
                self._recent.move_to_end(text)
                return self._recent[text]
        reading = self.lens.read(text)
        with self._lock:
            self._recent[text] = reading
            while len(self._recent) > READINGS_KEPT:
                self._recent.popitem(last=False)
        return reading


def _info(app: _App, params: _Params) -> dict[str, Any]:
    return {**app.info, "text": app.default_text}


def _read(app: _App, params: _Params) -> dict[str, Any]:
    return web.reading_json(app.reading(app.text(params)))


def _unit(app: _App, params: _Params) -> dict[str, Any]:
    layer, unit = params.integer("layer", 1), params.integer("unit", 0)
    kind = params.text("kind") or "h"
    reading = app.reading(app.text(params))
    values = web.unit_values(reading, layer, kind, unit)
    return {"layer": layer, "kind": kind, "unit": unit, "values": values}


def _rank(app: _App, params: _Params) -> dict[str, Any]:
    feature, pattern = params.text("feature"), params.text("pattern")
    if feature is None:
        raise RnnlabError(f"give a feature: one of {', '.join(web.FEATURES)}")
    reading = app.reading(app.text(params))
    return {"feature": feature, "units": app.lens.rank_units(reading, feature, pattern or None)}


def _training(app: _App, params: _Params) -> dict[str, Any]:
    return app.lens.training()


def _generation(app: _App, params: _Params) -> Generator[str, None, None]:
    """The prompt, then a piece per generated token. Nothing runs until the first piece is
    asked for, and closing this closes the Lens's stream (``yield from`` passes it on)."""
    prefix = params.text("prefix")
    yield from app.lens.stream(
        app.info["prefix"] if prefix is None else prefix,
        params.integer("length", 100),
        params.number("temperature", 0.0),
        params.integer("top_k", 0),
        params.optional_integer("seed"),
    )


# path -> (the route, the parameters it takes); /api/generate streams, the others answer JSON.
ROUTES: dict[str, tuple[Callable[[_App, _Params], Any], tuple[str, ...]]] = {
    "/api/info": (_info, ()),
    "/api/read": (_read, ("text",)),
    "/api/unit": (_unit, ("text", "layer", "kind", "unit")),
    "/api/rank": (_rank, ("text", "feature", "pattern")),
    "/api/training": (_training, ()),
    "/api/generate": (_generation, ("prefix", "length", "temperature", "top_k", "seed")),
}


class _Handler(BaseHTTPRequestHandler):
    """One connection: static files by name, the API, a JSON error for anything wrong."""

    protocol_version = "HTTP/1.1"  # keep-alive, and chunked bodies for the streamed text
    timeout = IDLE_SECONDS
    server_version = "rnnlab"
    sys_version = ""
    server: _Server

    def do_GET(self) -> None:
        self._respond()

    def do_POST(self) -> None:
        self._respond()

    def _respond(self) -> None:
        self._sent = False
        try:
            url = urlsplit(self.path)
            body = self._body()
            if not self._host_allowed():
                self._json(403, {"error": "this page answers only to 127.0.0.1 or localhost"})
            elif url.path in STATIC and self.command != "GET":
                self._json(405, {"error": f"{url.path} is read with GET"}, {"Allow": "GET"})
            elif url.path in STATIC:
                name = STATIC[url.path]
                headers = {"Content-Security-Policy": PAGE_POLICY} if name == "page.html" else {}
                self._send(200, self.server.assets[name], web.ASSETS[name], headers)
            elif url.path in ROUTES:
                route, takes = ROUTES[url.path]
                params = _Params(self._values(url.query, body))
                unknown = sorted(set(params.values) - set(takes))
                if unknown:
                    expected = ", ".join(takes) if takes else "no parameters"
                    raise RnnlabError(
                        f"unknown parameter {unknown[0]!r}; {url.path} takes {expected}"
                    )
                if url.path == "/api/generate":
                    self._stream(route(self.server.app, params))
                else:
                    self._json(200, route(self.server.app, params))
            else:
                self._json(404, {"error": f"no such page: {url.path[:100]}"})
        except RnnlabError as e:
            if self._sent:  # mid-stream: all a client can still be told is that the text broke off
                self.close_connection = True
            else:
                self._json(400, {"error": str(e)})
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
            raise RnnlabError(f"bad Content-Length {_shown(length)}")
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
                    "the query string is not valid (or has too many fields)"
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
        """A page bound to this machine answers only to its loopback names, so that no web
        site can reach it by pointing a name of its own at 127.0.0.1 (DNS rebinding)."""
        host = self.headers.get("Host")
        if not self.server.loopback or host is None:
            return True
        name = host.rsplit("]", 1)[0] + "]" if host.startswith("[") else host.split(":")[0]
        return name.lower() in ("127.0.0.1", "localhost", "[::1]")

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
        body = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", headers)

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
    """The HTTP server of one run's page: a thread per connection, one shared _App."""

    daemon_threads = True  # a connection still open never holds up Ctrl-C ...
    block_on_close = False  # ... nor the server's close
    allow_reuse_port = False  # a port in use is an error, never shared

    def __init__(self, address: tuple[str, int], app: _App, err: TextIO):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app, self._err, self._log_lock = app, err, threading.Lock()
        self.loopback = address[0] in LOOPBACK
        self.assets = {name: web.asset(name) for name in web.ASSETS}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # TCPServer's bind without HTTPServer's getfqdn, a DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def log(self, message: str) -> None:
        """One line (a traceback: several) on the server's error stream, control characters
        escaped (a request line is the client's text)."""
        lines = message.splitlines() or [""]
        shown = "\n".join(
            "".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in lines
        )
        with self._log_lock:
            print(shown, file=self._err, flush=True)

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
) -> int:
    """Serve the inspection page of the run directory ``run`` until Ctrl-C; returns 0.

    ``which`` is the checkpoint ("best" or "latest"). The URL goes to ``out`` (default
    stdout); a warning if ``host`` is reachable from other machines, and one line per
    request, go to ``err`` (default stderr). ``ready`` is called with the bound (host,
    port) once the server listens (with ``port`` 0, the port the system chose).
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
            server = _Server((host, port), app, err)
        except OSError as e:
            raise _bind_error(host, port, e) from None
        with server:
            bound = (str(server.server_address[0]), int(server.server_address[1]))
            print(f"serving {run} at {_url(*bound)}  (Ctrl-C stops)", file=out, flush=True)
            if host not in LOOPBACK:
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
