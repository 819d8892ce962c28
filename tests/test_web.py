"""`drain serve`: JSON shapes, qshape figures of a backlog with known ages, escaping of hostile
quarantined mail (also in real headless Chromium), and a page that keeps answering when
Redis is slow or gone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from drain.demo.sink import Sink, free_port
from drain.flow import ratelimit
from drain.intake.api import Client, Submission
from drain.observe import backlog
from drain.observe.backlog import BUCKETS_S
from drain.observe.http import SECURITY_HEADERS, StatusServer
from drain.settings import Settings
from drain.store import keys
from drain.store.embedded import server_binary
from tests.conftest import wait_for
from tests.test_cli import BOOK_KEYS

PAYLOAD = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
SENDER = '"<svg onload=alert(1)>"@evil.example'


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(url: str, method: str = "GET", timeout: float = 10.0) -> Answer:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return Answer(reply.status, dict(reply.headers), reply.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[..., StatusServer]]:
    """Start status servers on free ports, each reading Redis every 0.1 s; stopped after the test."""
    started: list[StatusServer] = []

    def _serve(redis_url: str | None = None, show_messages: bool | None = None) -> StatusServer:
        shown = {} if show_messages is None else {"show_messages": show_messages}  # else the server's default
        server = StatusServer(redis_url or settings.redis_url or "", settings, "127.0.0.1", 0, refresh_s=0.1, **shown)
        server.start()
        started.append(server)
        assert server.snapshots.refreshed.wait(10)
        return server

    yield _serve
    for server in started:
        server.stop()


def doc_of(server: StatusServer) -> Any:
    return fetch(server.url + "status.json").json()


def queue_hostile(client: Client) -> str:
    """A message an attacker wrote: markup in the Subject and the sender, a NUL byte that
    sends it to quarantine."""
    raw = (f"From: {SENDER}\r\nTo: victim@example.com\r\nSubject: {PAYLOAD}\r\n"
           "Message-ID: <evil@evil.example>\r\n\r\nhello\x00\r\n").encode()
    return client.enqueue(raw, sender=SENDER, recipients=["victim@example.com"])


def test_status_json_shape_and_http_surface(client: Client, relay: Sink, work: Callable[..., bool],
                                            serve: Callable[..., StatusServer]) -> None:
    client.enqueue_many([synthetic_to(i, "a.example.com") for i in range(3)])
    queue_hostile(client)
    work()
    server = serve(show_messages=True)  # its first snapshot is read after the work
    doc = doc_of(server)
    assert set(doc) == {"generated_at", "redis", "status", "backlog", "limits", "waits", "latency", "quarantine",
                        "history"}
    assert doc["waits"] == {"delivery_paused": False, "domains": []}
    assert doc["redis"] == {"up": True, "figures_at": doc["redis"]["figures_at"], "down_since": None, "error": None}
    status = doc["status"]
    assert set(status) >= {*BOOK_KEYS, "oldest_age_s", "rate_per_s", "eta_s", "balanced", "breakers_open"}
    assert status["accepted"] == 4 and status["delivered"] == 3 and status["quarantined"] == 1
    assert status["balanced"] is True
    assert doc["backlog"] == {"buckets_s": BUCKETS_S, "total": 0, "eta_s": 0.0, "held_by": {}, "domains": []}
    assert doc["latency"]["count"] == 3 and doc["latency"]["buckets"][-1] == ["+Inf", 3]
    quarantine = doc["quarantine"]
    assert quarantine["held"] == 1
    assert {"reason": "body.nul-byte", "held": 1, "found": 1} in quarantine["by_reason"]
    (recent,) = quarantine["recent"]
    assert recent["subject"] == PAYLOAD and recent["sender"] == SENDER  # JSON carries the text as it is
    assert recent["recipients"] == ["victim@example.com"] and "body.nul-byte" in recent["reasons"]

    page = fetch(server.url)
    assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert fetch(server.url + "status.json").headers["Content-Type"] == "application/json"
    head = fetch(server.url, method="HEAD")
    assert head.status == 200 and head.body == b""
    for method in ("POST", "PUT", "DELETE"):
        refused = fetch(server.url + "status.json", method=method)
        assert refused.status == 405 and refused.headers["Allow"] == "GET, HEAD"
    assert fetch(server.url + "admin").status == 404
    health = fetch(server.url + "healthz")
    assert health.status == 200 and "redis up" in health.text
    assert "drain_messages_total{event=\"delivered\"} 3.0" in fetch(server.url + "metrics").text


def synthetic_to(index: int, domain: str) -> Submission:
    from drain.demo.seeding import synthetic

    return Submission(synthetic(index), recipients=(f"u{index}@{domain}",))


def test_backlog_shape_of_a_seeded_backlog_with_known_ages(client: Client, settings: Settings,
                                                            serve: Callable[..., StatusServer],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ratelimit.pause(client.redis)
    now = time.time()
    # Accept mail "in the past": the store's clock is the only thing moved.
    for age_s, domain, count in ((7200, "old.example.com", 3), (700, "mid.example.org", 2),
                                 (0, "old.example.com", 1)):
        monkeypatch.setattr("drain.store.store.time", SimpleNamespace(time=lambda age=age_s: now - age))
        client.enqueue_many([synthetic_to(i, domain) for i in range(count)])
    monkeypatch.undo()
    ratelimit.set_domain(client.redis, "mid.example.org", 0.5)
    server = serve()
    shape = doc_of(server)["backlog"]
    assert shape["total"] == 6
    by_domain = {d["domain"]: d for d in shape["domains"]}
    assert list(by_domain) == ["old.example.com", "mid.example.org"]  # largest first
    old, mid = by_domain["old.example.com"], by_domain["mid.example.org"]
    expected_old = [0] * len(BUCKETS_S)
    expected_old[0], expected_old[BUCKETS_S.index(4800)] = 1, 3  # 7200 s falls in [4800, 9600)
    expected_mid = [0] * len(BUCKETS_S)
    expected_mid[BUCKETS_S.index(600)] = 2  # 700 s falls in [600, 1200)
    assert (old["total"], old["by_age"]) == (4, expected_old)
    assert (mid["total"], mid["by_age"]) == (2, expected_mid)
    # Delivery is paused: no figure, the reason instead, in the JSON and on the page alike.
    assert (mid["eta_s"], mid["held_by"]) == (None, "delivery paused")
    status = doc_of(server)["status"]
    assert 7200 <= status["oldest_age_s"] < 7200 + 60
    # The page shows the same figures in the domain table.
    page = fetch(server.url).text
    row = re.search(r'<tr><td class="dom">old\.example\.com</td>(.*?)</tr>', page)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[0] == "<b>4</b>" and cells[1] == "1" and cells[1 + BUCKETS_S.index(4800)] == "3"
    assert '<span class="tag info">cap 30/m</span>' in page  # mid.example.org's cap of 0.5/s
    assert "Delivery paused" in page and "2 h" in page  # the pill, and the oldest age
    assert cells[-2] == "delivery paused"  # the ETA column names what holds it


def test_waiting_mail_is_shown_by_destination(client: Client, serve: Callable[..., StatusServer]) -> None:
    client.enqueue_many([synthetic_to(i, "paused.example.com") for i in range(3)]
                        + [synthetic_to(i, "capped.example.org") for i in range(5)]
                        + [synthetic_to(i, "free.example.net") for i in range(2)])
    ratelimit.pause_domain(client.redis, "paused.example.com")
    ratelimit.set_domain(client.redis, "capped.example.org", 20.0)
    ratelimit.set_global(client.redis, 100.0)  # (backlog.shape fails on a paused domain with no pace at all)
    # The books' raw wait counters, as workers bump them: not shown on the page or in the JSON.
    client.redis.hset(keys.BOOKS, mapping={"held_total": 370497, "parked_total": 9528})
    server = serve()
    assert doc_of(server)["waits"] == {"delivery_paused": False, "domains": [
        {"domain": "capped.example.org", "queued": 5, "why": "capped at 20/s"},
        {"domain": "paused.example.com", "queued": 3, "why": "paused"}]}
    page = fetch(server.url).text
    assert "capped.example.org: <b>5</b> (capped at 20/s)" in page and "paused.example.com: <b>3</b> (paused)" in page
    assert "Rate-limit waits" not in page and "370,497" not in page and "370497" not in fetch(
        server.url + "status.json").text
    assert 'drain_rate_limit_waits_total{kind="held"} 370497.0' in fetch(server.url + "metrics").text


def test_hostile_quarantined_mail_shows_as_text(client: Client, work: Callable[..., bool],
                                                serve: Callable[..., StatusServer]) -> None:
    queue_hostile(client)
    work()
    server = serve(show_messages=True)
    page = fetch(server.url).text
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in page
    assert "&lt;svg onload=alert(1)&gt;" in page
    assert not re.search(r"<\s*(script|img|iframe|object|embed|link|form|input)\b", page, re.IGNORECASE)
    assert not re.search(r"<[^>]*\son\w+\s*=", page, re.IGNORECASE)  # no event-handler attribute anywhere
    assert "<svg onload" not in page


def test_messages_are_hidden_by_default(client: Client, work: Callable[..., bool],
                                        serve: Callable[..., StatusServer]) -> None:
    queue_hostile(client)
    work()
    server = serve()
    page = fetch(server.url).text
    assert "pwned" not in page and "evil.example" not in page and "victim@" not in page
    assert "--show-messages" in page
    quarantine = doc_of(server)["quarantine"]
    assert quarantine["recent"] is None and quarantine["held"] == 1


class RedisProcess:
    """A redis-server of our own, to stop, slow down and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port)

        def answers() -> bool:
            try:
                return bool(probe.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 10, "redis-server to start")
        probe.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


def test_page_keeps_answering_when_redis_goes_away(own_redis: RedisProcess, settings: Settings,
                                                   serve: Callable[..., StatusServer]) -> None:
    rc = redis.Redis.from_url(own_redis.url)
    api = Client(rc, settings.with_(redis_url=own_redis.url))
    ratelimit.pause(rc)
    api.enqueue_many([synthetic_to(i, "kept.example.com") for i in range(5)])
    rc.close()
    server = serve(own_redis.url)
    wait_for(lambda: server.snapshots.view().snapshot is not None, what="a first snapshot")
    own_redis.stop()
    wait_for(lambda: not server.snapshots.view().up, what="the refresher to notice")

    page = fetch(server.url)
    assert page.status == 200
    banner = re.search(r"Redis unreachable since (\d\d:\d\d:\d\d) — showing figures from (\d\d:\d\d:\d\d)",
                       page.text)
    assert banner is not None, page.text[:2000]
    assert "cannot connect to Redis" in page.text and f":{own_redis.port}" not in page.text  # no address shown
    assert '<div class="value">5</div>' in page.text  # the last known queue, still shown
    assert "kept.example.com" in page.text
    doc = doc_of(server)
    assert doc["redis"]["up"] is False and doc["redis"]["down_since"] is not None
    assert doc["status"]["accepted"] == 5
    metrics_text = fetch(server.url + "metrics").text
    assert "drain_redis_up 0.0" in metrics_text and 'drain_messages_total{event="accepted"} 5.0' in metrics_text
    assert "redis unreachable" in fetch(server.url + "healthz").text

    own_redis.start()  # an empty Redis this time: the page follows it again
    wait_for(lambda: server.snapshots.view().up, what="the refresher to reconnect")
    page = fetch(server.url).text
    assert "Redis unreachable" not in page and '<div class="value">0</div>' in page


def test_page_answers_while_redis_is_busy(own_redis: RedisProcess, serve: Callable[..., StatusServer]) -> None:
    server = serve(own_redis.url)
    wait_for(lambda: server.snapshots.view().snapshot is not None, what="a first snapshot")
    # Redis stopped (SIGSTOP): connected but answering nothing until we let it go again, so the
    # page below can only have been served while Redis was unresponsive.
    assert own_redis.proc is not None
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: not server.snapshots.view().up, what="the refresher to time out")
        page = fetch(server.url)
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    assert page.status == 200 and "Redis unreachable since" in page.text and "did not answer in time" in page.text


@pytest.mark.parametrize(("flags", "shown"), [((), False), (("--hide-messages",), False),
                                             (("--show-messages",), True)])
def test_serve_command(client: Client, settings: Settings, work: Callable[..., bool], flags: tuple[str, ...],
                       shown: bool) -> None:
    queue_hostile(client)
    work()
    port = free_port()
    env = dict(os.environ, DRAIN_REDIS_URL=settings.redis_url or "")
    proc = subprocess.Popen([sys.executable, "-m", "drain", "serve", "--listen", f"127.0.0.1:{port}", *flags],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def healthy() -> bool:
            try:
                return fetch(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
            except OSError:
                return False

        wait_for(healthy, 30, "drain serve to answer")
        wait_for(lambda: "body.nul-byte" in fetch(f"http://127.0.0.1:{port}/").text, what="the first snapshot")
        page = fetch(f"http://127.0.0.1:{port}/").text
        assert "drain status" in page
        assert ("victim@example.com" in page) is shown
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in err.decode()
    bad = subprocess.run([sys.executable, "-m", "drain", "serve", "--listen", "nowhere"], env=env,
                         capture_output=True, timeout=60, check=False)
    assert bad.returncode == 2 and b"--listen" in bad.stderr


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_page_in_headless_chromium(client: Client, relay: Sink, work: Callable[..., bool], tmp_path: Path,
                                   serve: Callable[..., StatusServer]) -> None:
    browser = _chromium()
    if browser is None:
        message = "Chromium is not installed (apt-get install chromium); the browser test needs it"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run it (.ci/run installs it)")
        pytest.skip(message)
    _screenshot_worthy_state(client, work)
    server = serve(show_messages=True)
    assert doc_of(server)["quarantine"]["recent"]
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    dumped = subprocess.run([*flags, "--dump-dom", server.url], capture_output=True, timeout=120, check=False)
    assert dumped.returncode == 0, dumped.stderr.decode()[-2000:]
    dom = dumped.stdout.decode()
    assert "<title>drain status" in dom and "pwned" not in (re.search(r"<title>(.*?)</title>", dom) or [""])[0]
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x onerror=\"document.title='pwned'\"&gt;" \
        in dom  # the subject, as text
    assert not re.search(r"<(script|img)\b", dom, re.IGNORECASE)  # nothing the payload would have made
    assert not re.search(r"<[^>]*\son\w+=", dom, re.IGNORECASE)
    assert "Queued by destination" in dom and "<svg" in dom  # rendered, chart included

    shot = tmp_path / "page.png"
    taken = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2300", "--hide-scrollbars",
                            server.url], capture_output=True, timeout=120, check=False)
    assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", taken.stderr.decode()[-2000:]
    keep = os.environ.get("DRAIN_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
    print(f"status page screenshot: {keep or shot}")


def _screenshot_worthy_state(client: Client, work: Callable[..., bool]) -> None:
    """A backlog over several domains and ages, quarantined mail (one hostile), delivered
    mail, limits, and six hours of history samples to draw."""
    from drain.demo.seeding import synthetic

    queue_hostile(client)
    bad = [p.read_bytes() for p in sorted((Path(__file__).parent.parent / "seeds" / "bad").glob("*.eml"))][:6]
    client.enqueue_many([*(synthetic(i) for i in range(40)), *bad])
    work()
    ratelimit.set_global(client.redis, 400.0)
    ratelimit.set_domain(client.redis, "example.net", 50.0)
    ratelimit.pause_domain(client.redis, "shop.example.net")
    ratelimit.pause(client.redis)
    client.enqueue_many([synthetic_to(i, d) for i, d in enumerate(
        ["example.com"] * 30 + ["example.org"] * 18 + ["example.net"] * 12 + ["shop.example.net"] * 5)])
    # History: workers sample the books every 10 s; here six hours of a draining backlog are written
    # in the same format (keys.HISTORY, newest first) so the chart has something to draw.
    now = time.time()
    samples = []
    for n in range(0, 6 * 360, 3):
        t = now - 6 * 3600 + n * 10
        queued = int(max(65, 1_500_000 * (1 - n / 1800) ** 1.6)) if n < 1800 else 65
        delivered = 1_500_000 - queued
        samples.append(json.dumps({"t": round(t, 1), "queued": queued, "ready": queued, "deferred": 0,
                                   "delivered": delivered, "quarantined": 4200, "bounced": 310}))
    client.redis.delete(keys.HISTORY)
    client.redis.lpush(keys.HISTORY, *samples)
    assert backlog.history(client.store)


def address(server: StatusServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname or "", parts.port or 80


def raw_request(server: StatusServer, request: bytes) -> bytes:
    """Send bytes as they are; the server's whole answer (it closes after `Connection: close`)."""
    with socket.create_connection(address(server), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("request_line", ["TRACE / HTTP/1.1", "CONNECT 127.0.0.1:80 HTTP/1.1",
                                          "OPTIONS * HTTP/1.1", "BREW /status.json HTTP/1.1",
                                          "POST /status.json HTTP/1.1"])
def test_other_methods_get_405_with_the_security_headers(client: Client, serve: Callable[..., StatusServer],
                                                         request_line: str) -> None:
    server = serve()
    answer = raw_request(server, f"{request_line}\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                         .encode())
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.split(" ", 2)[1] == "405", head
    headers = {k.lower(): v for k, _sep, v in (line.partition(": ") for line in head.splitlines()[1:])}
    assert headers["allow"] == "GET, HEAD"
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value, name


def test_unparsable_request_gets_400_with_the_security_headers(client: Client,
                                                               serve: Callable[..., StatusServer]) -> None:
    server = serve()
    answer = raw_request(server, b"GET / HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n")
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.split(" ", 2)[1] == "400", head
    for name, value in SECURITY_HEADERS.items():
        assert f"{name}: {value}" in head, name


def test_idle_and_slow_connections_neither_block_nor_add_threads(client: Client,
                                                                 serve: Callable[..., StatusServer]) -> None:
    server = serve()
    host, port = address(server)
    threads_before = threading.active_count()
    held: list[socket.socket] = []
    try:
        for n in range(300):
            conn = socket.create_connection((host, port), timeout=10)
            if n % 3 == 0:  # slowloris: a request begun and never finished
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(conn)
        for path in ("healthz", "", "status.json", "metrics"):
            assert fetch(server.url + path).status == 200
        assert threading.active_count() - threads_before <= 2  # no thread per connection
    finally:
        for conn in held:
            conn.close()


def test_idle_and_slow_connections_are_closed(client: Client, serve: Callable[..., StatusServer],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drain.observe.http.IDLE_TIMEOUT_S", 0.3)
    server = serve()
    host, port = address(server)
    with socket.create_connection((host, port), timeout=30) as idle, \
            socket.create_connection((host, port), timeout=30) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert idle.recv(100) == b""  # closed by the server, no answer
        assert slow.recv(100) == b""
