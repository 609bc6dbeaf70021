"""The HTTP API on a real server (127.0.0.1, random port), spoken to with real urllib/sockets."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from collector.config import init_directory
from collector.enrollment import issue_token
from collector.http import CollectorServer, RateLimiter, ServerLimits, tls_context
from collector.ingest import IngestLimits, Ingestor
from collector.store import SqliteStore, StoreError
from weightwarden.batch import CONTENT_TYPE as BATCH_TYPE

if TYPE_CHECKING:
    from collections.abc import Iterator

HOUR_MS = 3_600_000


class Clock:
    """A settable collector clock (ms)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        """The time it is set to."""
        return self.now


class Api:
    """A running server and the means to talk to it."""

    def __init__(self, server: CollectorServer, store, clock: Clock) -> None:
        self.server = server
        self.store = store
        self.clock = clock

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.server.url

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str | None = "",
        context: ssl.SSLContext | None = None,
    ) -> tuple[int, dict[str, str], dict]:
        """Send with urllib; return status, headers and the JSON body (errors included).

        The content type defaults to the endpoint's (the batch type for /v1/batches).
        """
        if content_type == "":
            content_type = BATCH_TYPE if path == "/v1/batches" else "application/json"
        headers = {"Content-Type": content_type} if body is not None and content_type else {}
        req = urllib.request.Request(  # noqa: S310 -- our own http(s) URL
            self.url + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30, context=context) as resp:  # noqa: S310
                return resp.status, dict(resp.headers), json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers), json.loads(err.read())

    def post(self, path: str, obj: object) -> tuple[int, dict[str, str], dict]:
        """POST ``obj`` as JSON."""
        return self.request("POST", path, json.dumps(obj).encode())

    def raw(self, data: bytes, *, half_close: bool = False) -> tuple[int, bytes]:
        """Send raw bytes; return the status and body of the answer (0 if none)."""
        host, port = self.server.address
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
                if _complete(received):
                    break
        if not received:
            return 0, b""
        head, _, body = received.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def enroll(self, agent, host: str | None = None) -> tuple[int, dict]:
        """Issue a token for ``host`` (default: the agent's) and enroll ``agent`` with it."""
        issued = issue_token(
            self.store, host=host or agent.agent_id, ttl_ms=HOUR_MS, now=self.clock()
        )
        status, _, body = self.post(
            "/v1/enroll",
            {"token": issued.token, "host": agent.agent_id, "public_key": agent.public_pem},
        )
        return status, body


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


@contextlib.contextmanager
def running(tmp_path, store=None, tls=None, **limits) -> Iterator[Api]:
    own = store is None
    store = store or SqliteStore(tmp_path / "c.sqlite", synchronous="normal")
    clock = Clock()
    server = CollectorServer(
        store=store,
        ingestor=Ingestor(
            store,
            limits=IngestLimits(max_body_bytes=limits.get("max_body_bytes", 16 << 20)),
            clock=clock,
        ),
        limits=ServerLimits(**limits),
        tls=tls,
        clock=clock,
        collector_public_key="PEM",
    )
    server.start()
    try:
        yield Api(server, store, clock)
    finally:
        server.stop(timeout=5)
        if own:
            store.close()


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    """A collector on 127.0.0.1 over a real SQLite store."""
    with running(tmp_path) as value:
        yield value


def test_health_answers_ok(api):
    """GET /v1/health is 200 with status ok while the store answers."""
    status, headers, body = api.request("GET", "/v1/health")
    assert (status, body["status"]) == (200, "ok")
    assert headers["Content-Type"] == "application/json"


def test_the_openapi_document_describes_exactly_the_endpoints_and_their_errors(api):
    """GET /openapi.json is an OpenAPI 3.1 document of the four endpoints, every answer JSON."""
    status, _, doc = api.request("GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert {path: sorted(ops) for path, ops in doc["paths"].items()} == {
        "/v1/enroll": ["post"],
        "/v1/batches": ["post"],
        "/v1/health": ["get"],
        "/openapi.json": ["get"],
    }
    batches = doc["paths"]["/v1/batches"]["post"]["responses"]
    assert set(batches) >= {"200", "400", "401", "403", "409", "411", "413", "415", "429"}
    assert "Retry-After" in batches["429"]["headers"]
    enroll = doc["paths"]["/v1/enroll"]["post"]["responses"]
    assert set(enroll) >= {"200", "400", "403", "409", "411", "413", "415"}
    schemas = doc["components"]["schemas"]
    refs = _refs(doc)
    assert refs, "the document references its schemas"
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)
    for operation in (op for ops in doc["paths"].values() for op in ops.values()):
        for response in operation["responses"].values():
            assert "application/json" in response["content"]


def test_the_openapi_document_is_valid_openapi_3_1(api):
    """The served document passes the OpenAPI 3.1 validator (openapi-spec-validator)."""
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(api.request("GET", "/openapi.json")[2])


def test_real_answers_match_their_documented_schemas(tmp_path, sim_agent):
    """Each status an endpoint answered is documented, and its JSON fits the schema."""
    jsonschema = pytest.importorskip("jsonschema")
    with running(tmp_path, rate_events_per_second=1.0, rate_burst_events=6) as api:
        doc = api.request("GET", "/openapi.json")[2]
        agent = sim_agent("gpu-01")
        seen = [("/v1/enroll", "post", *api.enroll(agent))]
        seen.append(("/v1/enroll", "post", *api.enroll(agent)))  # 409
        sent = agent.seal(agent.record_opens(3))
        for body in (sent, sent, agent.seal(agent.spool), b"junk"):
            status, _, answer = api.request("POST", "/v1/batches", body)
            seen.append(("/v1/batches", "post", status, answer))
        status, _, answer = api.request("POST", "/v1/batches", b"{}", content_type="text/plain")
        seen.append(("/v1/batches", "post", status, answer))
        seen.append(("/v1/health", "get", *api.request("GET", "/v1/health")[::2]))
        seen.append(("/v1/health", "delete", *api.request("DELETE", "/v1/health")[::2]))
    statuses = {(path, status) for path, _, status, _ in seen}
    assert statuses >= {
        ("/v1/enroll", 200),
        ("/v1/enroll", 409),
        ("/v1/batches", 200),
        ("/v1/batches", 409),
        ("/v1/batches", 429),
        ("/v1/batches", 400),
        ("/v1/batches", 415),
        ("/v1/health", 200),
        ("/v1/health", 405),
    }
    for path, method, status, answer in seen:
        operation = doc["paths"][path].get(method) or next(iter(doc["paths"][path].values()))
        response = operation["responses"][str(status)]
        schema = response["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(
            answer
        )


def _refs(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if "$ref" in node else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node))
    return set()


def test_enrollment_registers_the_key_and_the_agent_can_then_send(api, sim_agent):
    """A token enrolls its host once; the enrolled agent's batches are stored."""
    agent = sim_agent("gpu-01")
    status, body = api.enroll(agent)
    assert (status, body["agent_id"], body["collector_public_key"]) == (200, "gpu-01", "PEM")
    status, _, result = api.request("POST", "/v1/batches", agent.seal(agent.record_opens(3)))
    assert (status, result["acked_seq"], result["stored"]) == (200, 3, 3)
    assert api.store.count_events() == 3


def test_a_used_expired_or_foreign_token_is_refused_with_403(api, sim_agent):
    """Tokens work once, before they expire, for their host only."""
    agent = sim_agent("gpu-01")
    issued = issue_token(api.store, host="gpu-01", ttl_ms=HOUR_MS, now=api.clock())
    request = {"token": issued.token, "host": "gpu-01", "public_key": agent.public_pem}
    assert api.post("/v1/enroll", request)[0] == 200
    api.store.revoke_agent("gpu-01", now=api.clock())
    status, _, body = api.post("/v1/enroll", request)
    assert status == 403
    assert "unknown, used or expired" in body["error"]
    late = issue_token(api.store, host="gpu-01", ttl_ms=1000, now=api.clock())
    api.clock.now += 1000
    assert api.post("/v1/enroll", {**request, "token": late.token})[0] == 403
    other = issue_token(api.store, host="gpu-02", ttl_ms=HOUR_MS, now=api.clock())
    assert api.post("/v1/enroll", {**request, "token": other.token})[0] == 403
    assert api.post("/v1/enroll", {**request, "token": "wwe_made-up"})[0] == 403


def test_enrolling_an_enrolled_host_again_is_a_conflict(api, sim_agent):
    """A second enrollment of a live agent answers 409 and says to revoke first."""
    agent = sim_agent("gpu-01")
    assert api.enroll(agent)[0] == 200
    status, body = api.enroll(sim_agent("gpu-01"))
    assert status == 409
    assert "revoke" in body["error"]


def test_a_revoked_agent_is_refused_and_can_be_enrolled_again(api, sim_agent):
    """Revocation refuses batches (403); a new token re-keys the agent and its chain goes on."""
    agent = sim_agent("gpu-01")
    api.enroll(agent)
    api.request("POST", "/v1/batches", agent.seal(agent.record_opens(2)))
    api.store.revoke_agent("gpu-01", now=api.clock())
    status, _, body = api.request("POST", "/v1/batches", agent.seal(agent.record_opens(1)))
    assert status == 403
    assert "revoked" in body["error"]
    rekeyed = sim_agent("gpu-01")
    rekeyed.head, rekeyed.spool = agent.head, agent.spool
    assert api.enroll(rekeyed)[0] == 200
    status, _, body = api.request("POST", "/v1/batches", rekeyed.seal(agent.spool[2:]))
    assert (status, body["acked_seq"]) == (200, 3)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"token": "t", "host": "gpu-01"}',
        b'{"token": "t", "host": "bad host!", "public_key": "x"}',
        b'{"token": "t", "host": "gpu-01", "public_key": "not a pem"}',
        b'{"token": 5, "host": "gpu-01", "public_key": "x"}',
        b'{"token": "t", "host": "gpu-01", "public_key": "x", "extra": 1}',
    ],
)
def test_malformed_enrollment_requests_are_400(api, body):
    """Enrollment bodies that are not exactly token, host and a usable key: 400."""
    status, _, answer = api.request("POST", "/v1/enroll", body)
    assert status == 400
    assert answer["error"]


def test_batch_refusals_have_the_documented_statuses(api, sim_agent):
    """400 garbage, 401 wrong key, 403 unknown agent, 409 replay with the stored head."""
    agent = sim_agent("gpu-01")
    api.enroll(agent)
    assert api.request("POST", "/v1/batches", b"garbage")[0] == 400
    assert api.request("POST", "/v1/batches", b"WWB2" * 10)[0] == 400
    forged = agent.seal(agent.record_opens(1), key=sim_agent("x").key)
    status, _, body = api.request("POST", "/v1/batches", forged)
    assert (status, "signature" in body["error"]) == (401, True)
    stranger = sim_agent("gpu-99")
    assert api.request("POST", "/v1/batches", stranger.seal(stranger.record_opens(1)))[0] == 403
    sent = agent.seal(agent.spool)
    assert api.request("POST", "/v1/batches", sent)[0] == 200
    status, _, body = api.request("POST", "/v1/batches", sent)
    assert (status, body["acked_seq"]) == (409, 1)
    assert body["quarantine_id"]
    assert "Replayed batch" in body["error"]


def test_wrong_paths_and_methods_are_404_and_405_with_allow(api):
    """Unknown paths are 404; a known path with another method is 405 naming the allowed one."""
    status, _, body = api.request("GET", "/v1/nothing")
    assert (status, body["error"]) == (404, "no such path: /v1/nothing")
    status, headers, body = api.request("GET", "/v1/batches")
    assert (status, headers["Allow"]) == (405, "POST")
    status, headers, _ = api.request("DELETE", "/v1/health")
    assert (status, headers["Allow"]) == (405, "GET")
    status, _, _ = api.request("BREW", "/v1/health")
    assert status == 405


def test_a_wrong_content_type_is_415(api):
    """Each endpoint reads only its media type (parameters allowed): JSON or the batch type."""
    batches, enroll = "/v1/batches", "/v1/enroll"
    assert api.request("POST", batches, b"{}", content_type="text/plain")[0] == 415
    assert api.request("POST", batches, b"{}", content_type=None)[0] == 415
    status, _, body = api.request("POST", batches, b"{}", content_type="application/json")
    assert (status, BATCH_TYPE in body["error"]) == (415, True)
    assert api.request("POST", batches, b"{}", content_type=f"{BATCH_TYPE}; v=2")[0] == 400
    assert api.request("POST", enroll, b"{}", content_type=BATCH_TYPE)[0] == 415
    charset = "application/json; charset=utf-8"
    assert api.request("POST", enroll, b"{}", content_type=charset)[0] == 400


def test_a_body_without_content_length_is_411(api):
    """Chunked bodies and bodies of unknown length are refused before reading."""
    chunked = (
        b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    status, body = api.raw(chunked)
    assert status == 411
    assert "Content-Length" in json.loads(body)["error"]
    bare = b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n"
    assert api.raw(bare)[0] == 411


def test_a_body_over_the_limit_is_413_from_its_declared_length(tmp_path):
    """A Content-Length over the limit is refused unread, also when the bytes never come."""
    with running(tmp_path, max_body_bytes=1024) as api:
        status, _, body = api.request("POST", "/v1/batches", b"x" * 5000)
        assert status == 413
        assert "limit is 1024" in body["error"]
        promise = (
            b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 999999999999\r\n\r\n"
        )
        assert api.raw(promise)[0] == 413
        assert api.request("GET", "/v1/health")[0] == 200


def test_a_body_that_stops_short_is_408(api):
    """A client that half-closes before Content-Length bytes arrived gets 408."""
    short = (
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{}"
    )
    assert api.raw(short, half_close=True)[0] == 408


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/health HTTP/9.9\r\n\r\n", 400),
        (b"GET /v1/health HTTP/2.0\r\n\r\n", 400),
        (b"GET /v1/health HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
        (b"GET /v1/health HTTP/1.1\r\nBad header line\r\n\r\n", 400),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", 414),
        (
            (
                b"POST /v1/batches HTTP/1.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 12\r\nContent-Length: 13\r\n\r\n"
            ),
            400,
        ),
        (
            (
                b"POST /v1/batches HTTP/1.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: -5\r\n\r\n"
            ),
            400,
        ),
        (
            (
                b"POST /v1/batches HTTP/1.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: \xb2\r\n\r\n"  # a Latin-1 digit that int() refuses
            ),
            400,
        ),
    ],
)
def test_malformed_requests_are_answered_4xx_in_json(api, request_bytes, expected):
    """Broken request lines, versions and headers get a JSON 4xx, never a 5xx."""
    status, body = api.raw(request_bytes)
    assert status == expected
    assert json.loads(body)["error"]


def test_keep_alive_serves_several_requests_on_one_connection(api):
    """HTTP/1.1 keep-alive: two requests, one connection, two answers."""
    conn = http.client.HTTPConnection(*api.server.address, timeout=30)
    try:
        for _ in range(2):
            conn.request("GET", "/v1/health")
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ok"
    finally:
        conn.close()


def test_an_agent_over_its_rate_gets_429_with_retry_after(tmp_path, sim_agent):
    """The per-agent token bucket refuses with 429 and says when to come back."""
    with running(tmp_path, rate_events_per_second=1.0, rate_burst_events=3) as api:
        agent = sim_agent("gpu-01")
        api.enroll(agent)
        first = agent.seal(agent.record_opens(3))
        assert api.request("POST", "/v1/batches", first)[0] == 200
        status, headers, body = api.request("POST", "/v1/batches", agent.seal(agent.spool))
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert body["retry_after"] > 0
        other = sim_agent("gpu-02")
        api.enroll(other)
        assert api.request("POST", "/v1/batches", other.seal(other.record_opens(3)))[0] == 200


def test_the_rate_limiter_refills_at_its_rate():
    """Tokens come back at the configured rate; a cost above the burst is capped."""
    now = [0.0]
    limiter = RateLimiter(rate=10.0, burst=20, clock=lambda: now[0])
    assert limiter.admit("a", 20) is None
    assert limiter.admit("a", 5) == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.admit("a", 5) is None
    now[0] += 10
    assert limiter.admit("a", 1000) is None
    assert limiter.admit("b", 1) is None


class FailingStore:
    """The real store, except that reading an agent fails as ``error`` says."""

    def __init__(self, inner, error: Exception) -> None:
        self.inner = inner
        self.error = error
        self.failing = True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def agent(self, agent_id):
        """Fail while ``failing``."""
        if self.failing:
            raise self.error
        return self.inner.agent(agent_id)


def test_a_dead_store_is_503_and_the_server_keeps_serving(tmp_path, sim_agent):
    """A store that cannot be reached is a 503 with Retry-After, not a crash."""
    inner = SqliteStore(tmp_path / "c.sqlite", synchronous="normal")
    store = FailingStore(inner, StoreError("database is unavailable"))
    try:
        with running(tmp_path, store=store) as api:
            status, headers, body = api.request("GET", "/v1/health")
            assert (status, headers["Retry-After"]) == (503, "5")
            assert "unavailable" in body["error"]
            agent = sim_agent("gpu-01")
            assert api.request("POST", "/v1/batches", agent.seal(agent.record_opens(1)))[0] == 503
            store.failing = False
            assert api.request("GET", "/v1/health")[0] == 200
    finally:
        inner.close()


def test_a_bug_in_a_handler_is_a_logged_500_and_the_server_goes_on(tmp_path):
    """An unexpected exception answers 500 JSON and the next request is served."""
    inner = SqliteStore(tmp_path / "c.sqlite", synchronous="normal")
    store = FailingStore(inner, RuntimeError("a bug"))
    try:
        with running(tmp_path, store=store) as api:
            status, _, body = api.request("GET", "/v1/health")
            assert status == 500
            assert "internal error" in body["error"]
            store.failing = False
            assert api.request("GET", "/v1/health")[0] == 200
    finally:
        inner.close()


def test_connections_over_the_cap_are_answered_503_and_closed(tmp_path):
    """With every connection slot taken, a new connection gets 503 at once."""
    with running(tmp_path, max_connections=1) as api:
        held = http.client.HTTPConnection(*api.server.address, timeout=30)
        try:
            held.request("GET", "/v1/health")
            response = held.getresponse()
            response.read()
            status, body = api.raw(b"GET /v1/health HTTP/1.1\r\n\r\n")
            assert status == 503
            assert "too many connections" in json.loads(body)["error"]
        finally:
            held.close()
        for _ in range(100):  # the slot frees once the server sees the close
            if api.raw(b"GET /v1/health HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the connection slot was never released")


def test_https_serves_with_the_certificate_collector_init_wrote(tmp_path):
    """--tls: the API answers over HTTPS with the self-signed certificate, pinned as CA."""
    layout = init_directory(tmp_path / "c", tls=True, now=datetime.now(UTC))
    assert layout.certificate is not None
    store = SqliteStore(layout.db, synchronous="normal")
    try:
        with running(tmp_path, store=store, tls=tls_context(layout.certificate, layout.key)) as api:
            assert api.url.startswith("https://127.0.0.1:")
            context = ssl.create_default_context(cafile=str(layout.certificate))
            status, _, body = api.request("GET", "/v1/health", context=context)
            assert (status, body["status"]) == (200, "ok")
            assert api.raw(b"GET /v1/health HTTP/1.1\r\n\r\n")[0] == 0  # plain HTTP: dropped
            assert api.request("GET", "/v1/health", context=context)[0] == 200
    finally:
        store.close()


class GatedStore:
    """The real store, except that ``ingest`` waits for a gate (to hold a request open)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def ingest(self, **kwargs) -> None:
        """Signal, wait for the gate, then store."""
        self.entered.set()
        assert self.gate.wait(30)
        self.inner.ingest(**kwargs)


def test_stop_lets_a_request_in_progress_finish_and_closes_idle_connections(tmp_path, sim_agent):
    """Graceful stop: the batch being stored is stored and answered; idle keep-alives close."""
    inner = SqliteStore(tmp_path / "c.sqlite", synchronous="normal")
    store = GatedStore(inner)
    agent = sim_agent("gpu-01")
    inner.register_agent(agent_id="gpu-01", public_key_pem=agent.public_pem, now=1)
    try:
        with running(tmp_path, store=store) as api:
            idle = http.client.HTTPConnection(*api.server.address, timeout=30)
            idle.request("GET", "/v1/health")
            idle.getresponse().read()
            answers: list[int] = []
            body = agent.seal(agent.record_opens(2))
            sender = threading.Thread(
                target=lambda: answers.append(api.request("POST", "/v1/batches", body)[0])
            )
            sender.start()
            assert store.entered.wait(30)
            stopper = threading.Thread(target=api.server.stop)
            stopper.start()
            store.gate.set()
            sender.join(30)
            stopper.join(30)
            assert answers == [200]
            assert inner.count_events() == 2
            assert idle.sock is not None
            assert idle.sock.recv(1) == b""  # closed by the server
            idle.close()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(api.server.address, timeout=5).close()
    finally:
        inner.close()
