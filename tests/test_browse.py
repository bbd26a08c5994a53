"""browse() in real headless Chromium against pages served on loopback, and a full run that uses it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ROOT, run_script, start_script, subprocess_env, wait_for, write_prompts
from fake_teacher import answer, call_tools

import generate_distillation_data as gdd

PAGE = (b"<html><head><title>Trial</title></head><body><h1>Study NCT01234567</h1>"
        b"<p>Intervention: pembrolizumab 200 mg every three weeks, in adults with melanoma.</p>"
        b"<div id='late'></div><script>document.getElementById('late').innerText = "
        b"'Rendered by JavaScript: enrolment complete';</script></body></html>")


class Pages(BaseHTTPRequestHandler):
    release = threading.Event()  # the slow page answers only when a test is done with it

    def log_message(self, *args):
        pass

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path == "/page":
            self._send(200, PAGE, "text/html")
        elif self.path == "/redirect-inside":
            self._redirect(f"http://127.0.0.1:{port}/page")
        elif self.path == "/redirect-private":
            self._redirect(f"http://127.0.0.2:{port}/page")  # another loopback address, not allowed here
        elif self.path == "/slow":
            self.release.wait(30)
            self._send(200, PAGE, "text/html")
        elif self.path == "/data.bin":
            self._send(200, b"\x00\x01" * 100, "application/octet-stream")
        else:
            self._send(404, b"<html><body><h1>Not found</h1><p>There is nothing at this address.</p></body></html>",
                       "text/html")

    def _send(self, code, body, content_type):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.end_headers()


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    Pages.release.set()
    server.shutdown()


@pytest.fixture(scope="module")
def tools_module():
    gdd.install_rnow_stand_in()
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
    result = run_script(workdir, "prompts.jsonl", "--tools", str(ROOT / "tools.py"), "--base-url", teacher.base_url,
                        env=subprocess_env(BROWSE_ALLOW_PRIVATE="127.0.0.1", HOME=str(home)), timeout=120)
    assert result.code == 0, result.err
    assert not (home / ".crawl4ai").exists()  # Crawl4AI's files go to a folder we choose, not the home
    [record] = result.records()
    tool_result = record["messages"][2]["content"]
    assert "Rendered by JavaScript" in tool_result and record["tools"] == ["calculate", "browse"]
    assert result.err.count("\n") < 12  # Crawl4AI's own logging stays off the progress output
    leftover = {pid for pid in chromium_processes() - before if _alive(pid)}
    assert not leftover


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_ctrl_c_during_a_browse_leaves_no_browser_behind(workdir, teacher, site):
    before = chromium_processes()
    write_prompts(workdir, ["Open the slow page"])
    teacher.script("Open the slow page", call_tools(("browse", {"url": f"{site}/slow"})), answer("never"))
    process = start_script(workdir, "prompts.jsonl", "--tools", str(ROOT / "tools.py"), "--base-url",
                           teacher.base_url, env=subprocess_env(BROWSE_ALLOW_PRIVATE="127.0.0.1", BROWSE_TIMEOUT="30"))
    wait_for(lambda: len(chromium_processes() - before) > 0, timeout=60, what="the browser to start")
    process.send_signal(signal.SIGINT)
    while "Stopping" not in (line := process.stderr.readline()):
        assert line, "exited before its stopping message"
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    wait_for(lambda: not {pid for pid in chromium_processes() - before if _alive(pid)}, timeout=10,
             what="Chromium to exit")


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
