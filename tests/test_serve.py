"""rnnlab serve over HTTP, and the self-contained page rnnlab inspect --html writes."""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from conftest import COMMAND_ENV
from rnnlab import cli
from rnnlab.errors import RnnlabError
from rnnlab.lens import MAX_TEXT_CHARS
from rnnlab.report import write_report
from rnnlab.serve import BODY_LIMIT, serve


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


def start_server(run: Path) -> tuple[str, io.StringIO]:
    """Serve ``run`` from a daemon thread on a free port: (its address, its log)."""
    bound: list[tuple[str, int]] = []
    ready = threading.Event()
    log = io.StringIO()

    def on_ready(address):
        bound.append(address)
        ready.set()

    thread = threading.Thread(
        target=serve,
        args=(run,),
        kwargs={"port": 0, "out": io.StringIO(), "err": log, "ready": on_ready},
        daemon=True,  # ends with the tests: serve() runs until Ctrl-C
    )
    thread.start()
    assert ready.wait(60), "the server did not start"
    host, port = bound[0]
    return f"{host}:{port}", log


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
    ("/api/generate", {"top_k": -2}, "top-k"),
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
