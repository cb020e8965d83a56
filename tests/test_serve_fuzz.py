"""rnnlab serve's HTTP API under arbitrary requests (hypothesis).

One real server, started once for the module on a tiny run, answers every route with
every parameter: text, numbers at and beyond their limits, bytes that are not UTF-8 (raw
and percent-escaped), repeated keys, unknown names; GET with a query string and POST
with a JSON body, objects or not, valid or not. Every answer must be a 2xx or a 4xx (a
503 only with Retry-After: the server's bound), an error must be a JSON message on one
line, the connection must stay usable unless the server said it closes it, and the
server must log no traceback. About 200 cases; ``-s`` prints how many ran.
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve import one_torch_thread, start_server, tiny_run

from rnnlab.lens import MAX_GENERATE, MAX_PATTERN_CHARS, MAX_TEXT_CHARS
from rnnlab.serve import ROUTES, STATIC

# Minutes of training, subprocesses and servers: the full suite (CI) runs it, the fast tier not.
pytestmark = pytest.mark.slow

# The autouse fixture, imported so that it applies to this module's tests too.
__all__ = ["one_torch_thread"]

CASES = 50  # per test below: four tests, 200 requests (and as many follow-ups)
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ran = {"requests": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = tiny_run(tmp_path_factory.mktemp("fuzz"))
    address, log = start_server(run)
    yield address, log
    print(f"\nfuzzed rnnlab serve with {ran['requests']} requests")
    assert "Traceback" not in log.getvalue(), log.getvalue()


def exchange(address: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request as these bytes; check the answer, then that the connection still
    serves a request (unless the answer said it closes). Returns (status, headers, body)."""
    host, port = address.rsplit(":", 1)
    ran["requests"] += 1
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=raw.split(b" ", 1)[0].decode())
        response.begin()  # a dropped connection raises here ...
        body = response.read()  # ... or here (a chunked body cut short)
        headers = {k.lower(): v for k, v in response.getheaders()}
        status = response.status
        assert 200 <= status < 300 or 400 <= status < 500 or status == 503, (raw[:200], status)
        if status == 503:
            assert headers["retry-after"].isdigit()
        if status >= 400:
            assert headers["content-type"].startswith("application/json"), headers
            error = json.loads(body)["error"]
            assert isinstance(error, str) and error and "\n" not in error, error
        elif headers["content-type"].startswith("application/json"):
            json.loads(body)
        if headers.get("connection", "").lower() != "close":
            sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
            again = http.client.HTTPResponse(sock, method="GET")
            again.begin()
            again.read()
            assert again.status == 200, (raw[:200], again.status)
    return status, headers, body


def get(target: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n"


def post(path: bytes, body: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % (path, len(body))
    return head + body


PATHS = [*ROUTES, *STATIC, "/api/", "/api/info/", "/nope", "/%FF", "/api/read?"]
NAMES = sorted({name for _, takes in ROUTES.values() for name in takes} | {"prompt", ""})
# Numbers a parameter might be given: its limits, one beyond them, and absurd ones.
NUMBERS = [0, 1, -1, 15, 16, 2, MAX_GENERATE, MAX_GENERATE + 1, MAX_TEXT_CHARS, 100, 101,
           2**31, 2**63, 2**64, 2**64 - 1, -(2**63), 10**400]  # fmt: skip
FLOATS = [0.0, -0.0, 1e-320, 5e-324, 1e-310, 0.5, 100.0, 100.0001, 1e308, 1e-45]
WORDS = ["nan", "inf", "-inf", "1e309", "1e-400", "0x10", "1_000", " 5 ", "٣", "true", "null",
         "h", "c", "x", "quotes", "brackets", "line-position", "word-start", "regex",
         "(a+)+b", "([", "a" * (MAX_PATTERN_CHARS + 1), "the time machine", "\ud800"]  # fmt: skip
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(WORDS),
    st.sampled_from(NUMBERS).map(str),
    st.sampled_from(FLOATS).map(repr),
    st.just("a" * (MAX_TEXT_CHARS + 1)),
)
# A query value as bytes on the wire: escaped UTF-8, raw UTF-8, or bytes that are not UTF-8.
QUERY_VALUE = st.one_of(
    TEXT.map(lambda t: quote_from_bytes(t.encode("utf-8", "surrogatepass")).encode()),
    st.text(alphabet=st.characters(blacklist_characters="&#% \r\n\t\x0b\x0c"), max_size=20).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    ),
    st.binary(max_size=12).map(
        lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"")
    ),
    st.binary(max_size=6).map(lambda b: quote_from_bytes(b).encode()),
)


@FUZZ
@given(
    st.sampled_from(PATHS),
    st.lists(st.tuples(st.sampled_from(NAMES), QUERY_VALUE), max_size=5),
    st.data(),
)
def test_any_get_with_any_query_is_answered(server, path, fields, data):
    address, _ = server
    _, takes = ROUTES.get(path, (None, ()))
    if takes and data.draw(st.booleans()):  # mostly the route's own names, some repeated
        fields += [
            (name, data.draw(QUERY_VALUE)) for name in data.draw(st.sets(st.sampled_from(takes)))
        ]
    query = b"&".join(quote_from_bytes(n.encode()).encode() + b"=" + v for n, v in fields)
    exchange(address, get(path.encode() + (b"?" + query if query else b"")))


JSON_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(NUMBERS),
        st.sampled_from(FLOATS),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@FUZZ
@given(st.sampled_from(sorted(ROUTES)), st.data())
def test_any_post_with_any_json_object_is_answered(server, path, data):
    address, _ = server
    _, takes = ROUTES[path]
    names = st.sampled_from([*takes, "prompt"]) if takes else st.just("prompt")
    params = data.draw(st.dictionaries(names, JSON_VALUE, max_size=len(takes) + 1))
    body = json.dumps(params, ensure_ascii=data.draw(st.booleans())).encode(
        "utf-8", "surrogatepass"
    )
    exchange(address, post(path.encode(), body))


@FUZZ
@given(
    st.sampled_from([*sorted(ROUTES), "/"]),
    st.one_of(
        JSON_VALUE.map(lambda v: json.dumps(v).encode()),  # JSON, mostly not an object
        st.binary(max_size=40),
        st.sampled_from(
            [b"{", b"[" * 5000, b'{"text": "\\ud800"}', b"\xff\xfe{}", b"  ", b"{}" * 3]
        ),
    ),
)
def test_any_post_body_is_answered(server, path, body):
    address, _ = server
    exchange(address, post(path.encode(), body))


def escaped(text: str) -> str:
    return quote_from_bytes(text.encode("utf-8", "surrogatepass"))


# Each route's parameters at and beyond their limits, as the page would send them.
LIMITS = {
    "/api/generate": {
        "prefix": st.one_of(TEXT, st.just("")),
        "length": st.sampled_from([1, 20, MAX_GENERATE, MAX_GENERATE + 1, 0, -1, 2**64, 1.5, "3"]),
        "temperature": st.sampled_from(
            [0, 1e-320, 5e-324, 1e-310, 0.7, 100, 100.5, -1e-320, "1e-320"]
        ),
        "top_k": st.sampled_from([0, 1, 2, 27, 28, 29, 10**9, 10**9 + 1, -1, 2**64]),
        "seed": st.sampled_from([None, 0, 2**64 - 1, 2**64, -1, "7"]),
    },
    "/api/unit": {
        "text": st.one_of(st.none(), TEXT),
        "layer": st.sampled_from([0, 1, 2, -1, 2**64, "1"]),
        "kind": st.sampled_from(["h", "c", "", "H", None]),
        "unit": st.sampled_from([0, 15, 16, -1, 2**64, "3", 3.0]),
    },
    "/api/rank": {
        "text": st.one_of(st.none(), TEXT),
        "feature": st.sampled_from(
            ["quotes", "brackets", "line-position", "word-start", "regex", "x"]
        ),
        "pattern": st.one_of(st.none(), TEXT),
    },
    "/api/read": {"text": st.one_of(st.none(), TEXT, st.just("a" * MAX_TEXT_CHARS))},
}


@FUZZ
@given(st.sampled_from(sorted(LIMITS)), st.data())
def test_parameters_at_and_beyond_their_limits_are_answered(server, path, data):
    address, _ = server
    params = {name: data.draw(values, label=name) for name, values in LIMITS[path].items()}
    params = {k: v for k, v in params.items() if v is not None}
    if path == "/api/generate" and params.get("length") == MAX_GENERATE:
        params["temperature"] = 0  # greedy: the longest stream, once and quickly
    if data.draw(st.booleans(), label="as GET"):
        query = "&".join(f"{escaped(k)}={escaped(str(v))}" for k, v in params.items())
        exchange(address, get(f"{path}?{query}".encode()))
    else:
        body = json.dumps(params).encode()
        exchange(address, post(path.encode(), body))
