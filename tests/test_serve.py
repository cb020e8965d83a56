"""rnnlab serve over HTTP, and the self-contained page rnnlab inspect --html writes."""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
import torch

from conftest import COMMAND_ENV
from rnnlab import cli
from rnnlab.command_config import ServeConfig
from rnnlab.errors import RnnlabError
from rnnlab.lens import MAX_TEXT_CHARS, Lens
from rnnlab.report import write_report
from rnnlab.serve import (
    BODY_LIMIT,
    MAX_CONNECTIONS,
    READINGS_KEPT,
    READINGS_WAITING,
    serve,
)


def tiny_run(folder: Path) -> Path:
    """A run directory of a 16-unit LSTM trained for two epochs (a few seconds)."""
    run = folder / "run"
    # fmt: off
    status = cli.main(["train", "--out", str(run), "--max-tokens", "3000", "--hidden", "16",
                       "--batch-size", "8", "--num-steps", "10", "--epochs", "2", "--quiet",
                       "--impl", "torch", "--cell", "lstm", "--embedding", "8"])
    # fmt: on
    assert status in (0, None)
    return run


def start_server(run: Path, **options) -> tuple[str, io.StringIO]:
    """Serve ``run`` from a daemon thread on a free port: (its address, its log).

    ``options``: more arguments of serve (host, allow_hosts); the address is the one to
    connect to (127.0.0.1 for a server listening on 0.0.0.0)."""
    bound: list[tuple[str, int]] = []
    ready = threading.Event()
    log = io.StringIO()

    def on_ready(address):
        bound.append(address)
        ready.set()

    thread = threading.Thread(
        target=serve,
        args=(run,),
        kwargs={"port": 0, "out": io.StringIO(), "err": log, "ready": on_ready, **options},
        daemon=True,  # ends with the tests: serve() runs until Ctrl-C
    )
    thread.start()
    assert ready.wait(60), "the server did not start"
    host, port = bound[0]
    return f"{'127.0.0.1' if host == '0.0.0.0' else host}:{port}", log


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The server's model runs on one torch thread: it reads a token at a time, and on a
    busy 2-core machine a second thread only waits (a reading takes ~50 times longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(run):
    return start_server(run)


def request(server, method: str, path: str, body=None, headers=None):
    """(status, headers, body bytes) of one request; a dict body is sent as JSON."""
    address, _ = server
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
    connection = http.client.HTTPConnection(address, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def api(server, path: str, params=None):
    """The JSON answer of a POST to the API (status, value)."""
    status, _, body = request(server, "POST", path, params or {})
    return status, json.loads(body)


def no_traceback(server):
    _, log = server
    assert "Traceback" not in log.getvalue(), log.getvalue()


# ---------------------------------------------------------------- the page and its paths


def test_page_and_its_files_are_served_with_their_types(server):
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="generate-button"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for path, media in (("/page.css", "text/css"), ("/page.js", "text/javascript")):
        status, headers, body = request(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(media) and body
    assert request(server, "POST", "/", {})[0] == 405


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/../../etc/passwd",
        "/static/..%2f..",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/page.js/../../../etc/passwd",
        "//etc/passwd",
        "/web/page.html",
        "/__init__.py",
        "/api",
        "/api/nope",
    ],
)
def test_unknown_paths_and_traversal_attempts_are_404(server, path):
    status, headers, body = request(server, "GET", path)
    assert status == 404, (path, body)
    assert headers["Content-Type"].startswith("application/json")
    assert "no such page" in json.loads(body)["error"]


def test_only_loopback_names_are_answered(server):
    status, _, body = request(server, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403 and "localhost" in json.loads(body)["error"]
    assert request(server, "GET", "/api/info", headers={"Host": "localhost:1"})[0] == 200


def host_status(server, host: str) -> int:
    return request(server, "GET", "/api/info", headers={"Host": host})[0]


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.2"])
def test_every_listening_address_keeps_the_rebinding_check(run, host):
    """A page at rebind.example.com whose name now points here cannot read the API, what
    ever address the server listens on; this machine's names and addresses still can."""
    server = start_server(run, host=host)
    port = server[0].rsplit(":", 1)[1]
    for name in (
        "rebind.example.com",
        "localhost.example.com",
        "evil.localhost",
        "127.0.0.1.nip.io",
    ):
        assert host_status(server, f"{name}:{port}") == 403, name
    for name in ("localhost", "LocalHost.", "127.0.0.1", "127.0.0.2", "[::1]", host,
                 socket.gethostname()):  # fmt: skip
        assert host_status(server, f"{name}:{port}") == 200, name
    _, log = server
    assert ("other machines" in log.getvalue()) == (host == "0.0.0.0")  # 127/8 is loopback


def test_allow_host_adds_a_name_such_as_a_proxys(run):
    server = start_server(run, allow_hosts=("Proxy.Example.com",))
    assert host_status(server, "proxy.example.com") == 200
    assert host_status(server, "PROXY.example.com.:443") == 200
    assert host_status(server, "other.example.com") == 403


def test_allow_host_is_repeatable_and_checked():
    args = cli.build_parser().parse_args(
        ["serve", "run", "--allow-host", "a.example", "--allow-host", "b.example"]
    )
    assert args.allow_host == ["a.example", "b.example"]
    assert ServeConfig(allow_host=tuple(args.allow_host)).allow_host == ("a.example", "b.example")
    for bad in ("http://a.example", "a.example:8080", "", "a b", "a/b"):
        with pytest.raises(RnnlabError, match="--allow-host") as caught:
            ServeConfig(allow_host=(bad,))
        assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- bad parameters

LONG_TEXT = "a" * (MAX_TEXT_CHARS + 1)
BAD = [
    ("/api/generate", {"length": "many"}, "length"),
    ("/api/generate", {"length": 1.5}, "length"),
    ("/api/generate", {"length": 0}, "length"),
    ("/api/generate", {"length": 100_000}, "length"),
    ("/api/generate", {"temperature": "hot"}, "temperature"),
    ("/api/generate", {"temperature": "nan"}, "temperature"),
    ("/api/generate", {"temperature": -1}, "temperature"),
    ("/api/generate", {"top_k": -2}, "top_k"),
    ("/api/generate", {"top_k": True}, "top_k"),
    ("/api/generate", {"seed": "lucky"}, "seed"),
    ("/api/generate", {"prefix": 7}, "prefix"),
    ("/api/generate", {"prefix": "a" * (MAX_TEXT_CHARS + 1)}, "prefix"),
    ("/api/generate", {"prompt": "the"}, "unknown parameter 'prompt'"),
    ("/api/read", {"text": LONG_TEXT}, "20,000"),
    ("/api/read", {"text": ""}, "token"),
    ("/api/read", {"text": ["a"]}, "text"),
    ("/api/unit", {"layer": 0}, "layer"),
    ("/api/unit", {"layer": 2}, "layer"),
    ("/api/unit", {"layer": "top"}, "layer"),
    ("/api/unit", {"kind": "x"}, "kind"),
    ("/api/unit", {"unit": 16}, "unit"),
    ("/api/unit", {"unit": -1}, "unit"),
    ("/api/unit", {"unit": "first"}, "unit"),
    ("/api/rank", {}, "feature"),
    ("/api/rank", {"feature": "vowels"}, "unknown feature"),
    ("/api/rank", {"feature": "regex"}, "pattern"),
    ("/api/rank", {"feature": "regex", "pattern": "(["}, "not a regular expression"),
    ("/api/rank", {"feature": "regex", "pattern": "a" * 1000}, "pattern"),
    ("/api/training", {"epochs": 2}, "no parameters"),
]


@pytest.mark.parametrize("path, params, words", BAD, ids=[f"{p}-{w}" for p, _, w in BAD])
def test_each_bad_parameter_is_a_400_with_a_message(server, path, params, words):
    status, answer = api(server, path, params)
    assert status == 400, answer
    assert words in answer["error"] and "\n" not in answer["error"]
    assert "--" not in answer["error"]  # the API's parameter names, not the command line's
    no_traceback(server)


def raw_request(server, target: bytes) -> tuple[int, bytes]:
    """(status, body) of a GET whose request target is sent as these bytes, unescaped."""
    address, _ = server
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = http.client.HTTPResponse(sock, method="GET")
        response.begin()
        return response.status, response.read()


def test_a_url_is_read_as_utf8_and_bytes_that_are_not_are_a_400(server):
    for prefix in ("café", "voilà", "Å", "“quoted”", "时间"):  # à: C3 A0, Å: C3 85
        for target in (f"/api/generate?prefix={prefix}&length=1", f"/api/read?text={prefix}"):
            escaped = target.replace(prefix, quote(prefix))
            # as curl sends it, unescaped, it means what it means escaped
            raw, plain = raw_request(server, target.encode()), raw_request(server, escaped.encode())
            assert raw == plain and raw[0] in (200, 400), (target, raw, plain)
            if target.startswith("/api/generate"):
                assert raw[0] == 200 and raw[1].decode().startswith(prefix), (target, raw)
    for target in (b"/api/generate?prefix=caf\xe9", b"/api/generate?prefix=caf%E9"):
        status, body = raw_request(server, target)
        error = json.loads(body)["error"]
        assert status == 400 and "UTF-8" in error, (target, error)
    status, body = raw_request(server, b"/\xff")
    assert status == 404 and "no such page" in json.loads(body)["error"]
    no_traceback(server)


def test_a_malformed_request_line_is_answered_in_json(server):
    for target in (b"/api/info extra", b"/api/info\x00"):
        status, body = raw_request(server, target)
        assert 400 <= status < 500 and json.loads(body)["error"], (target, body)
    no_traceback(server)


def test_a_temperature_whose_logits_overflow_is_greedy_not_a_broken_stream(server):
    status, _, tiny = request(server, "GET", "/api/generate?temperature=1e-320&length=30&seed=1")
    assert status == 200
    status, _, greedy = request(server, "GET", "/api/generate?length=30")
    assert status == 200 and tiny == greedy
    no_traceback(server)


def test_query_string_parameters_are_checked_too(server):
    status, _, body = request(server, "GET", "/api/generate?length=abc")
    assert status == 400 and "length" in json.loads(body)["error"]
    status, _, body = request(server, "GET", "/api/unit?unit=1&unit=2")
    assert status == 400 and "once" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100_000, "not valid JSON"),
        (json.dumps({"text": "\ud800"}).encode(), "Unicode"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(server, body, words):
    status, _, answer = request(server, "POST", "/api/read", body)
    assert status == 400 and words in json.loads(answer)["error"]
    no_traceback(server)


def test_an_oversized_body_is_a_400(server):
    body = json.dumps({"text": "a" * (BODY_LIMIT + 1)}).encode()
    status, headers, answer = request(server, "POST", "/api/read", body)
    assert status == 400 and "limit" in json.loads(answer)["error"]
    assert headers["Connection"] == "close"


def test_a_bad_content_length_is_a_400(server):
    status, headers, answer = request(server, "POST", "/api/read", headers={"Content-Length": "x"})
    assert status == 400 and "Content-Length" in json.loads(answer)["error"]
    assert headers["Connection"] == "close"


# ---------------------------------------------------------------- what the API answers


def test_generate_streams_text_that_starts_with_the_prefix(server):
    address, _ = server
    connection = http.client.HTTPConnection(address, timeout=60)
    params = {"prefix": "the time ", "length": 60, "temperature": 0.8, "top_k": 5, "seed": 3}
    connection.request("POST", "/api/generate", body=json.dumps(params))
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    text = response.read().decode()
    connection.close()
    assert text.startswith("the time ") and 60 <= len(text) - len("the time ") <= 300
    # the same seed, the same text; asked for with a GET this time
    status, _, again = request(server, "GET", "/api/generate?prefix=the+time+&length=60"
                                                "&temperature=0.8&top_k=5&seed=3")  # fmt: skip
    assert status == 200 and again.decode() == text


def test_read_gives_each_token_a_probability_and_a_top_5(server):
    status, reading = api(server, "/api/read", {"text": "the time traveller was expounding"})
    assert status == 200
    tokens, probs, top = reading["tokens"], reading["probs"], reading["top"]
    assert "".join(tokens) == "the time traveller was expounding"
    assert probs[0] is None and top[0] == []
    assert all(0 < p <= 1 for p in probs[1:])
    assert all(len(row) == 5 and all(0 < p <= 1 for _, p in row) for row in top[1:])
    assert math.isclose(reading["loss_bits"], reading["loss_nats"] / math.log(2), rel_tol=1e-6)
    status, default = api(server, "/api/read")  # no text: the validation split's start
    assert status == 200 and len(default["tokens"]) > 100


def test_unit_and_rank_describe_the_text_read(server):
    text = "the time traveller was expounding a recondite matter to us"
    status, unit = api(server, "/api/unit", {"text": text, "layer": 1, "kind": "c", "unit": 3})
    assert status == 200 and len(unit["values"]) == len(text)
    status, ranked = api(server, "/api/rank", {"text": text, "feature": "word-start"})
    assert status == 200 and len(ranked["units"]) == 10
    assert {"layer", "kind", "unit", "r"} <= set(ranked["units"][0])
    status, ranked = api(server, "/api/rank", {"text": text, "feature": "regex", "pattern": "t"})
    assert status == 200 and ranked["units"]


def test_info_and_training_describe_the_run(server):
    status, info = api(server, "/api/info")
    assert status == 200
    assert (info["cell"], info["layers"], info["hidden"]) == ("lstm", 1, 16)
    assert "line-position" in info["features"] and info["text"]
    status, training = api(server, "/api/training")
    assert status == 200 and training["config"]["model"]["hidden"] == 16
    assert [row["epoch"] for row in training["history"]] == [1, 2]


def test_concurrent_requests_all_succeed(server):
    def one(i: int) -> int:
        if i % 3 == 0:
            return request(server, "POST", "/api/generate", {"length": 40, "seed": i})[0]
        if i % 3 == 1:
            return api(server, "/api/read", {"text": f"the time machine {i}"})[0]
        return api(server, "/api/unit", {"unit": i % 16})[0]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(16))) == [200] * 16
    no_traceback(server)


# ---------------------------------------------------------------- bounds


@pytest.fixture
def gate(monkeypatch):
    """Readings wait at a gate, holding the reading model's lock as a long reading does:
    (set when one has started, open to let them through). Opened when the test ends."""
    started, opened = threading.Event(), threading.Event()
    step_through = Lens._step_through

    def gated(lens, ids):
        with lens._lock:
            started.set()
            opened.wait(60)
        return step_through(lens, ids)

    monkeypatch.setattr(Lens, "_step_through", gated)
    yield started, opened
    opened.set()


def test_readings_beyond_the_line_are_refused_503_with_retry_after(server, gate):
    started, opened = gate
    sent = 12
    refused_at_once = sent - 1 - READINGS_WAITING  # one is read, READINGS_WAITING wait
    texts = [f"the time machine, text {i} of the burst" for i in range(sent)]
    with ThreadPoolExecutor(sent) as pool:
        futures = [pool.submit(request, server, "POST", "/api/unit", {"text": t}) for t in texts]
        done: set = set()
        deadline = time.monotonic() + 30
        while len(done) < refused_at_once and time.monotonic() < deadline:
            done |= wait(futures, timeout=1, return_when=FIRST_COMPLETED).done
        answered_while_busy = sorted(f.result()[0] for f in done)
        opened.set()
        answers = [f.result() for f in futures]
    assert started.is_set()
    assert answered_while_busy == [503] * refused_at_once
    assert (
        sorted(status for status, _, _ in answers)
        == [200] * (sent - refused_at_once) + [503] * refused_at_once
    )
    for status, headers, body in answers:
        if status == 503:
            assert headers["Retry-After"].isdigit() and "busy" in json.loads(body)["error"]
    no_traceback(server)


def test_generation_goes_on_while_a_long_reading_holds_its_model(server, gate):
    started, opened = gate
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(api, server, "/api/read", {"text": "a text read for a long time"})
        assert started.wait(30)
        address, _ = server
        connection = http.client.HTTPConnection(address, timeout=10)
        connection.request("POST", "/api/generate", body=json.dumps({"length": 20}))
        response = connection.getresponse()
        assert response.status == 200 and len(response.read()) > 20
        connection.close()
        assert not reading.done()  # the reading is still at the gate
        opened.set()
        assert reading.result()[0] == 200


@pytest.mark.slow
def test_connections_beyond_the_cap_are_refused_and_threads_stay_bounded(server):
    address, _ = server
    host, port = address.rsplit(":", 1)
    threads = threading.active_count()
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        deadline = time.monotonic() + 30
        while threading.active_count() < threads + MAX_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(8):
            with socket.create_connection((host, int(port)), timeout=10) as extra:
                answer = b""
                while chunk := extra.recv(4096):  # the answer, then the server closes
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: " in head, answer
            assert "connections" in json.loads(body)["error"]
        assert threading.active_count() <= threads + MAX_CONNECTIONS
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 30
    while request(server, "GET", "/api/info")[0] != 200:  # the idle ones' threads end
        assert time.monotonic() < deadline
        time.sleep(0.1)


def memory_mib(pid: int, key: str) -> float:
    """A figure of /proc/PID/status in MiB: VmRSS (resident now), VmHWM (its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.slow
def test_a_burst_of_readings_holds_at_most_the_kept_readings(tmp_path):
    """12 concurrent /api/unit on 12 different texts: the server's peak resident memory
    grows by at most READINGS_KEPT readings over what it held before (one reading). The
    bound comes from the design, not a measurement: a reading of T tokens holds the
    states, 2 kinds (LSTM) x L x T x H float32, and about 2 KiB of Python objects per
    token (its tokens, probabilities and top 5, and its answer as it is made); 8 MiB more
    for the allocator and the requests' threads. Without the bound the readings are made
    at once, each with its memory (about 12 of them: 130 MiB against 30 here)."""
    hidden, layers, T = 256, 2, 1200
    run = tmp_path / "run"
    # fmt: off
    assert cli.main(["train", "--out", str(run), "--max-tokens", "3000", "--hidden", str(hidden),
                     "--layers", str(layers), "--batch-size", "8", "--num-steps", "10",
                     "--epochs", "1", "--quiet", "--impl", "torch", "--cell", "lstm"]) in (0, None)
    # fmt: on
    reading = 2 * layers * T * hidden * 4 / 2**20 + T * 2 / 1024  # MiB
    bound = READINGS_KEPT * reading + 8
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "serve", str(run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=COMMAND_ENV,
    )
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, line
        server = (line.split("http://", 1)[1].split("/", 1)[0], io.StringIO())

        def unit(seed: int) -> int:
            rng = random.Random(seed)
            text = "".join(rng.choice("the time machine ") for _ in range(T))
            return request(server, "POST", "/api/unit", {"text": text, "unit": 3})[0]

        assert unit(-1) == 200  # one reading made and kept: memory as the page leaves it
        try:  # "5": start the peak afresh from now (Linux 4.0)
            Path(f"/proc/{process.pid}/clear_refs").write_text("5")
        except OSError:
            pass  # then it is the peak since the start, no lower
        before = memory_mib(process.pid, "VmRSS")
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(unit, range(12)))
        peak = memory_mib(process.pid, "VmHWM")
    finally:
        process.kill()
        process.communicate()
    # one read and READINGS_WAITING in line at least (more if one ends before all are sent)
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1 + READINGS_WAITING
    print(f"peak {peak:.0f} MiB, {peak - before:.1f} MiB over {before:.0f}; bound {bound:.1f}")
    assert peak - before <= bound, (peak, before, bound)


def test_a_client_that_leaves_mid_stream_frees_the_server(server):
    address, log = server
    connection = http.client.HTTPConnection(address, timeout=60)
    connection.request("POST", "/api/generate", body=json.dumps({"length": 2000}))
    response = connection.getresponse()
    assert response.status == 200 and response.read(5)
    connection.close()  # long before 2,000 tokens
    assert api(server, "/api/read", {"text": "the time machine"})[0] == 200
    no_traceback(server)


def test_the_log_has_one_line_per_request(server):
    _, log = server
    request(server, "GET", "/api/info?")
    assert log.getvalue().splitlines()[-1] == '127.0.0.1 "GET /api/info? HTTP/1.1" 200 -'


# ---------------------------------------------------------------- starting and stopping


def test_a_port_in_use_is_a_one_line_error(run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RnnlabError, match="in use") as caught:
            serve(run, port=port, out=io.StringIO(), err=io.StringIO())
    assert "\n" not in str(caught.value)


def test_listening_beyond_this_machine_warns_and_ctrl_c_returns_0(run):
    def interrupt(address):
        raise KeyboardInterrupt  # as Ctrl-C would, once the server listens

    out, err = io.StringIO(), io.StringIO()
    assert serve(run, host="0.0.0.0", port=0, out=out, err=err, ready=interrupt) == 0
    assert "http://0.0.0.0:" in out.getvalue() and "stopped" in out.getvalue()
    warning = err.getvalue().strip()
    assert len(warning.splitlines()) == 1 and "other machines" in warning


@pytest.mark.slow
def test_sigint_stops_the_server_cleanly(run):
    code = "import sys; from rnnlab.serve import serve; sys.exit(serve(sys.argv[1], port=0))"
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=COMMAND_ENV,
    )
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, line + process.stderr.read()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


# ---------------------------------------------------------------- the report file


class _Page(HTMLParser):
    """The attributes that could load something, and the embedded data, of an HTML page."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.data_blocks: list[str] = []
        self._in_data = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset")]
        self._in_data = tag == "script" and attributes.get("id") == "page-data"

    def handle_data(self, data):
        if self._in_data:
            self.data_blocks.append(data)

    def handle_endtag(self, tag):
        self._in_data = False


def test_the_report_is_one_self_contained_page(run, tmp_path):
    text = 'the time traveller </script><!-- "quoted" (bracketed)\nand a new line'
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    out = write_report(run, tmp_path / "report.html", tmp_path / "text.txt")
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "src=" not in page
    assert "url(" not in page
    parser = _Page()
    parser.feed(page)
    assert all(link.startswith(("#", "data:")) for link in parser.links), parser.links
    assert len(parser.data_blocks) == 1
    data = json.loads("".join(parser.data_blocks))
    assert data["info"]["text"] == text  # </script> inside the JSON did not end the block
    tokens = data["reading"]["tokens"]
    assert set(data["activations"]) == {"h1", "c1"}
    assert len(data["activations"]["h1"]) == 16 and len(data["activations"]["h1"][0]) == len(tokens)
    assert set(data["rankings"]) == {"quotes", "brackets", "line-position", "word-start"}
    assert page.count("<script") == 2 and "<style>" in page


def test_the_report_defaults_to_the_validation_text(run, tmp_path):
    out = write_report(run, tmp_path / "default.html")
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "no such file"),
        (b"\xff\xfe bad bytes", "not UTF-8"),
        (b"a" * (MAX_TEXT_CHARS + 1), "20,000"),
        ("folder", "folder"),
    ],
)
def test_a_bad_text_file_is_a_one_line_error(run, tmp_path, content, words):
    path = tmp_path / "text.txt"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(RnnlabError, match=words) as caught:
        write_report(run, tmp_path / "out.html", path)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out.html").exists()


def test_a_report_that_cannot_be_written_is_a_one_line_error(run, tmp_path):
    with pytest.raises(RnnlabError, match="cannot write"):
        write_report(run, tmp_path / "missing" / "out.html")
    assert os.listdir(tmp_path) == []
