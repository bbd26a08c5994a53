"""browse() in real headless Chromium against pages served on loopback, and a full run that uses it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, run_script, start_script, subprocess_env, wait_for, write_prompts
from fake_teacher import answer, call_tools

import generate_distillation_data as gdd

PAGE = (b"<html><head><title>Trial</title></head><body><h1>Study NCT01234567</h1>"
        b"<p>Intervention: pembrolizumab 200 mg every three weeks, in adults with melanoma.</p>"
        b"<div id='late'></div><script>document.getElementById('late').innerText = "
        b"'Rendered by JavaScript: enrolment complete';</script></body></html>")


def hostile_page(body: str, head: str = "") -> bytes:
    return (f"<html><head>{head}</head><body><p>Hostile page with enough visible text to count as a page.</p>"
            f"{body}</body></html>").encode()


HOSTILE = {  # each tries to make the browser reach {internal}, the internal service on 127.0.0.2
    "/popup": hostile_page("<script>window.open('{internal}/from-popup')</script>"),
    "/fetch": hostile_page("<script>fetch('{internal}/from-fetch').catch(() => {{}})</script>"),
    "/image": hostile_page("<img src='{internal}/from-img.png'>"),
    "/iframe": hostile_page("<iframe src='{internal}/from-iframe'></iframe>"),
    "/websocket": hostile_page("<script>new WebSocket('{ws}/from-websocket')</script>"),
    "/service-worker": hostile_page(
        "<p id='sw'>waiting</p><script>navigator.serviceWorker.register('/sw.js')"
        ".then(() => document.getElementById('sw').innerText = 'sw registered')"
        ".catch(e => document.getElementById('sw').innerText = 'sw blocked: ' + e.message)</script>"),
    "/script-navigation": hostile_page(
        "", head="<script>location.replace('{internal}/from-navigation')</script>"),
    "/meta-refresh": hostile_page(
        "", head="<meta http-equiv='refresh' content='0; url={internal}/from-refresh'>"),
}


class Internal(BaseHTTPRequestHandler):
    """The internal service (127.0.0.2): nothing browse does may ever reach it."""

    hits: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Internal.hits.append(self.path)
        body = b"<html><body><p>SECRET internal metadata: instance-role credentials</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Pages(BaseHTTPRequestHandler):
    release = threading.Event()  # the slow page answers only when a test is done with it
    hang = threading.Event()  # /hang-once: its first visit waits for this; later visits answer at once
    hang_visits = 0
    gate = threading.Event()  # /gate-*: the first visit of each waits for this
    gated: set = set()
    internal = ""  # the internal service's base URL

    def log_message(self, *args):
        pass

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path in HOSTILE:
            internal = self.internal
            page = HOSTILE[self.path].decode().format(internal=internal, ws=internal.replace("http:", "ws:"))
            self._send(200, page.encode(), "text/html")
        elif self.path == "/sw.js":
            script = f"self.addEventListener('install', () => fetch('{self.internal}/from-sw'));"
            self._send(200, script.encode(), "text/javascript")
        elif self.path == "/redirect-internal-service":
            self._redirect(f"{self.internal}/from-redirect")
        elif self.path == "/page":
            self._send(200, PAGE, "text/html")
        elif self.path == "/redirect-inside":
            self._redirect(f"http://127.0.0.1:{port}/page")
        elif self.path == "/redirect-private":
            self._redirect(f"http://127.0.0.2:{port}/page")  # another loopback address, not allowed here
        elif self.path == "/slow":
            self.release.wait(30)
            self._send(200, PAGE, "text/html")
        elif self.path == "/hang-once":
            Pages.hang_visits += 1
            if Pages.hang_visits == 1:
                self.hang.wait(30)
            self._send(200, PAGE, "text/html")
        elif self.path.startswith("/gate-"):  # its first visit waits until the test opens the gate
            first = self.path not in Pages.gated
            Pages.gated.add(self.path)
            if first:
                self.gate.wait(30)
            self._send(200, PAGE, "text/html")
        elif self.path == "/data.bin":
            self._send(200, b"\x00\x01" * 100, "application/octet-stream")
        else:
            self._send(404, b"<html><body><h1>Not found</h1><p>There is nothing at this address.</p>"
                            b"</body></html>", "text/html")

    def _send(self, code, body, content_type):
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # a browser killed while the page waited
            pass

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.end_headers()


@pytest.fixture(scope="module")
def site():
    Pages.release.clear()  # another module's site may have released it
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    internal = ThreadingHTTPServer(("127.0.0.2", 0), Internal)
    Pages.internal = f"http://127.0.0.2:{internal.server_address[1]}"
    for each in (server, internal):
        threading.Thread(target=each.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    Pages.release.set()
    server.shutdown()
    internal.shutdown()


@pytest.fixture(scope="module")
def tools_module():
    gdd._install_rnow_stand_in()
    import importlib.util

    spec = importlib.util.spec_from_file_location("shipped_tools", ROOT / "tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browse(tools_module):
    """Call browse() on one event loop for the module, with loopback 127.0.0.1 allowed; close at the end."""
    loop = asyncio.new_event_loop()
    mp = pytest.MonkeyPatch()
    mp.setenv("BROWSE_ALLOW_PRIVATE", "127.0.0.1")
    mp.setenv("BROWSE_TIMEOUT", "2")

    def call(url: str) -> str:
        return loop.run_until_complete(tools_module.browse(url))

    call.loop = loop
    yield call
    loop.run_until_complete(tools_module.aclose())
    loop.close()
    mp.undo()


def test_page_with_javascript_text(browse, site):
    text = browse(f"{site}/page")
    assert text.startswith(f"URL: {site}/page\nStatus: 200")
    assert "pembrolizumab 200 mg" in text and "Rendered by JavaScript: enrolment complete" in text


def test_redirect_inside_allowed_hosts_is_followed(browse, site):
    text = browse(f"{site}/redirect-inside")
    assert f"URL: {site}/page" in text and "pembrolizumab" in text


def test_404_and_non_html(browse, site):
    assert browse(f"{site}/missing") == f"Error: HTTP 404 for {site}/missing"
    assert browse(f"{site}/data.bin").startswith("Error:")


def test_slow_page_times_out(browse, site):
    started = time.monotonic()
    text = browse(f"{site}/slow")
    assert text == f"Error: {site}/slow did not load within 2 s."
    assert time.monotonic() - started < 20


def test_redirect_to_a_private_address_is_refused(browse, site):
    text = browse(f"{site}/redirect-private")
    assert text.startswith("Error:") and "private" in text and "pembrolizumab" not in text


@pytest.mark.parametrize("url,why", [
    ("file:///etc/passwd", "only http:// and https://"),
    ("javascript:alert(1)", "only http:// and https://"),
    ("raw:<h1>x</h1>", "only http:// and https://"),
    ("http://127.0.0.2:9/", "private/internal address"),
])
def test_refused_urls(browse, url, why):
    assert why in browse(url)


def test_private_addresses_are_refused_without_the_allow_switch(tools_module, monkeypatch):
    monkeypatch.delenv("BROWSE_ALLOW_PRIVATE", raising=False)
    for url in ("http://127.0.0.1:1/", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                "http://[::1]/", "http://0.0.0.0/", "http://224.0.0.1/"):
        problem = asyncio.run(tools_module.url_problem(url))
        assert problem and "private/internal" in problem, url
    # browse checks before any browser or connection is involved
    assert "private/internal" in asyncio.run(tools_module.browse("http://169.254.169.254/latest/meta-data/"))


def test_concurrent_calls_share_one_browser(browse, site, tools_module):
    loop_results = [browse(f"{site}/page") for _ in range(2)]
    first = tools_module._browser._crawler
    assert all("pembrolizumab" in r for r in loop_results) and first is not None
    assert browse(f"{site}/page") and tools_module._browser._crawler is first


def browsers_started_by(pid: int) -> set[int]:
    """Chromium processes descended from `pid`."""
    parents = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue

    def descends(child: int) -> bool:
        while child > 1:
            child = parents.get(child, 0)
            if child == pid:
                return True
        return False

    return {found for found in chromium_processes() if descends(found)}


def chromium_processes() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "chrom"], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def test_full_run_with_browse_leaves_no_browser_behind(workdir, teacher, site):
    before = chromium_processes()
    write_prompts(workdir, ["Find the intervention"])
    teacher.script("Find the intervention", call_tools(("browse", {"url": f"{site}/page"})),
                   answer("Pembrolizumab."))
    home = workdir / "home"
    home.mkdir()
    result = run_script(workdir, "prompts.jsonl", "--tools", str(ROOT / "tools.py"),
                        "--base-url", teacher.base_url,
                        env=subprocess_env(BROWSE_ALLOW_PRIVATE="127.0.0.1", HOME=str(home)), timeout=120)
    assert result.code == 0, result.err
    assert not (home / ".crawl4ai").exists()  # Crawl4AI's files go to a folder we choose, not the home
    [record] = result.records()
    tool_result = record["messages"][2]["content"]
    assert "Rendered by JavaScript" in tool_result and record["tools"] == ["calculate", "browse"]
    assert result.err.count("\n") < 12  # Crawl4AI's own logging stays off the progress output
    # Chromium's last processes may take a moment to go after the run exits, on a loaded machine
    wait_for(lambda: not {pid for pid in chromium_processes() - before if _alive(pid)}, timeout=10,
             what="Chromium to exit after the run")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_ctrl_c_during_a_browse_leaves_no_browser_behind(workdir, teacher, site):
    write_prompts(workdir, ["Open the slow page"])
    teacher.script("Open the slow page", call_tools(("browse", {"url": f"{site}/slow"})), answer("never"))
    process = start_script(workdir, "prompts.jsonl", "--tools", str(ROOT / "tools.py"), "--base-url",
                           teacher.base_url,
                           env=subprocess_env(BROWSE_ALLOW_PRIVATE="127.0.0.1", BROWSE_TIMEOUT="30"))
    # its own browser: another worker's Chromium (or anything whose command line says "chrom") must not count
    wait_for(lambda: browsers_started_by(process.pid), timeout=60, what="the browser to start")
    ours = browsers_started_by(process.pid)
    process.send_signal(signal.SIGINT)
    while "Stopping" not in (line := process.stderr.readline()):
        assert line, "exited before its stopping message"
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    wait_for(lambda: not {pid for pid in ours if _alive(pid)}, timeout=10, what="Chromium to exit")


def test_browser_discovery_order_and_install_hint(tools_module, monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "no-playwright-browsers"))
    monkeypatch.delenv("CHROME_PATH", raising=False)
    with pytest.raises(tools_module.BrowserUnavailable, match="apt-get install -y chromium"):
        tools_module.find_browser(system_browsers=("/nonexistent/chromium",))
    fake_chrome = tmp_path / "chrome"
    fake_chrome.write_text("#!/bin/sh\n")
    fake_chrome.chmod(0o755)
    monkeypatch.setenv("CHROME_PATH", str(fake_chrome))
    assert tools_module.find_browser(system_browsers=("/nonexistent/chromium",)) == str(fake_chrome)
    installed = tmp_path / "pw" / "chromium-1234" / "chrome-linux64"
    installed.mkdir(parents=True)
    (installed / "chrome").write_text("")
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "pw"))
    assert tools_module.find_browser() is None  # Playwright's own Chromium first


@pytest.mark.parametrize("path", list(HOSTILE) + ["/redirect-internal-service"])
def test_nothing_a_page_does_reaches_an_internal_address(browse, site, tools_module, path):
    Internal.hits.clear()
    refused_before = len(tools_module._browser._proxy.refused) if tools_module._browser._proxy else 0
    text = browse(f"{site}{path}")
    assert "SECRET" not in text
    if path in ("/script-navigation", "/meta-refresh", "/redirect-internal-service"):
        assert text.startswith(f"Error: {site}{path} led to an address browse does not open"), text
        assert "127.0.0.2" in text and "private/internal" in text
    if path == "/service-worker":
        assert "sw blocked: service workers are blocked by browse" in text, text
    else:  # the attempt was made, and refused by the guard (so the test proves something)
        wait_for(lambda: "127.0.0.2" in tools_module._browser._proxy.refused[refused_before:], timeout=10,
                 what="the guard to refuse 127.0.0.2")
    assert Internal.hits == []


@pytest.mark.parametrize("address", [
    "100.64.0.1", "100.127.255.254",  # shared address space (cloud metadata on some clouds)
    "198.18.0.1", "192.0.2.1", "240.0.0.1", "0.0.0.0", "255.255.255.255", "169.254.169.254",
    "::ffff:127.0.0.2", "::ffff:10.0.0.1", "::ffff:100.64.0.1",  # IPv4-mapped
    "::127.0.0.2",  # IPv4-compatible
    "64:ff9b::a00:1", "64:ff9b::7f00:2",  # NAT64 of 10.0.0.1, 127.0.0.2
    "2002:7f00:2::1", "2002:a00:1::1",  # 6to4 of 127.0.0.2, 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffd",  # Teredo whose client is 127.0.0.2
    "fd00::1", "fe80::1", "::1", "::", "ff02::1", "2001:db8::1",
])
def test_only_globally_routable_addresses_are_public(tools_module, address):
    import ipaddress

    assert not tools_module.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "2002:808:808::1"])
def test_public_addresses_stay_public(tools_module, address):
    import ipaddress

    assert tools_module.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("url", ["http://100.64.0.1/", "http://2130706434/", "http://0x7f000002/",
                                 "http://[::ffff:127.0.0.2]/", "http://127.1/",
                                 "http://[64:ff9b::a9fe:a9fe]/"])
def test_other_spellings_of_internal_addresses_are_refused(tools_module, monkeypatch, url):
    monkeypatch.delenv("BROWSE_ALLOW_PRIVATE", raising=False)
    assert "private/internal" in asyncio.run(tools_module.url_problem(url)), url


def kill_our_browsers() -> int:
    """SIGKILL every Chromium process this test process started (as the OOM killer would)."""
    import psutil

    victims = [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()]
    for process in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


def test_a_killed_browser_is_started_again_on_the_next_call(browse, site, tools_module):
    assert "pembrolizumab" in browse(f"{site}/page")
    first = tools_module._browser._crawler
    assert kill_our_browsers()
    assert "pembrolizumab" in browse(f"{site}/page")  # not "Unexpected error": a new browser read it
    assert tools_module._browser._crawler is not first


def test_a_call_whose_browser_dies_under_it_is_tried_once_more(browse, site, tools_module):
    browse(f"{site}/page")  # the browser is up

    async def kill_during_the_visit():
        for _ in range(600):
            if Pages.hang_visits:
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(kill_our_browsers)
        Pages.hang.set()  # the server thread of the first visit can finish (nobody reads it any more)

    async def both():
        return await asyncio.gather(tools_module.browse(f"{site}/hang-once"), kill_during_the_visit())

    text, _ = browse.loop.run_until_complete(both())
    assert "pembrolizumab" in text and Pages.hang_visits == 2


def test_calls_in_flight_when_the_browser_is_killed_are_never_a_page_error(browse, site, tools_module):
    """Issue 25: every Chromium process killed while four calls are in flight. Each call is the browser's
    failure, not the page's: tried again on a new browser (or the rollout fails as unavailable), never
    "Error: could not open ...: Unexpected error in _crawl_web ... playwright" written as a result."""
    browse(f"{site}/page")  # the browser is up
    paths = [f"/gate-{i}" for i in range(4)]

    async def kill_when_all_arrived():
        for _ in range(600):
            if len(Pages.gated) == len(paths):
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(kill_our_browsers)
        Pages.gate.set()

    async def calls():
        return await asyncio.gather(*(tools_module.browse(f"{site}{p}") for p in paths),
                                    kill_when_all_arrived(), return_exceptions=True)

    results = browse.loop.run_until_complete(calls())[:4]
    for result in results:
        if isinstance(result, BaseException):
            assert type(result).__name__ in ("ToolUnavailable", "BrowserUnavailable"), repr(result)
        else:
            assert "pembrolizumab" in result, result[:300]


def test_the_browsers_death_in_crawl4ais_words_is_recognised(tools_module):
    said = ("Unexpected error in _crawl_web at line 58 in run_async (/venv/lib/python3.11/site-packages/"
            "playwright/_impl/_connection.py):\n"
            "Error: Page.goto: Target page, context or browser has been closed")
    assert tools_module.died_under_call(said)
    assert not tools_module.died_under_call("Failed on navigating ACS-GOTO:\n"
                                            "Page.goto: net::ERR_NAME_NOT_RESOLVED")
    assert not tools_module.died_under_call("Page.goto: Timeout 30000ms exceeded.")


def test_a_death_playwright_has_not_noticed_yet_still_starts_a_new_browser(tools_module):
    """The race the issue saw: the call's error says the browser died while Playwright still reports it
    connected. The call is the browser's failure (None: tried again), and the next call starts another."""
    from types import SimpleNamespace

    connected = SimpleNamespace(is_connected=lambda: True)
    died = tools_module.failed_result("Unexpected error in _crawl_web at line 58 in run_async "
                                      "(/x/playwright/_impl/_connection.py): "
                                      "Target page, context or browser has been closed")

    class Crawler:
        crawler_strategy = SimpleNamespace(browser_manager=SimpleNamespace(browser=connected))

        async def arun(self, url, config):
            return died

    shared = tools_module.SharedBrowser()
    crawler = Crawler()
    shared._crawler = crawler
    assert asyncio.run(shared.open("http://127.0.0.1:9/page")) is None
    assert shared._dead is crawler  # not reused: crawler() closes it and starts another
