"""BROWSE_CDP_URL: browse through a browser service over the Chrome DevTools Protocol (here a real Chromium
started with --remote-debugging-port on loopback), with the same guard on every connection it makes."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess

import pytest

import test_browse
from conftest import wait_for
from test_browse import Internal

# test_browse's fixtures, used here by name as the tests' parameters
site, tools_module = test_browse.site, test_browse.tools_module


@pytest.fixture(scope="module")
def browser_service(tmp_path_factory):
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    assert binary, "a Chromium is needed (apt-get install -y chromium)"
    process = subprocess.Popen([binary, "--headless=new", "--remote-debugging-port=0", "--no-first-run",
                                "--no-sandbox", f"--user-data-dir={tmp_path_factory.mktemp('cdp-profile')}",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    endpoint = None
    for line in process.stderr:
        if match := re.search(r"DevTools listening on (ws://\S+)", line):
            endpoint = match.group(1)
            break
    assert endpoint, "Chromium did not open its DevTools port"
    yield "http://" + endpoint.split("//", 1)[1].split("/", 1)[0]
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def remote_browse(tools_module, browser_service):
    loop = asyncio.new_event_loop()
    mp = pytest.MonkeyPatch()
    mp.setenv("BROWSE_CDP_URL", browser_service)
    mp.setenv("BROWSE_ALLOW_PRIVATE", "127.0.0.1")
    mp.setenv("BROWSE_TIMEOUT", "3")
    def call(url: str) -> str:
        return loop.run_until_complete(tools_module.browse(url))

    call.loop = loop  # the guard proxy serves on this loop
    yield call
    loop.run_until_complete(tools_module.aclose())
    loop.close()
    mp.undo()


def test_remote_browser_reads_pages_and_no_local_browser_starts(remote_browse, site, tools_module):
    text = remote_browse(f"{site}/page")
    assert text.startswith(f"URL: {site}/page\nStatus: 200")
    assert "pembrolizumab 200 mg" in text and "Rendered by JavaScript: enrolment complete" in text
    assert remote_browse(f"{site}/missing") == f"Error: HTTP 404 for {site}/missing"
    assert tools_module._browser._crawler is None  # the local Chromium never started


def test_remote_browser_slow_page_times_out(remote_browse, site):
    assert remote_browse(f"{site}/slow") == f"Error: {site}/slow did not load within 3 s."


@pytest.mark.parametrize("path", ["/redirect-internal-service", "/iframe", "/fetch", "/popup",
                                  "/script-navigation"])
def test_guard_applies_to_every_request_of_the_remote_browser(remote_browse, site, tools_module, path):
    Internal.hits.clear()
    text = remote_browse(f"{site}{path}")
    assert "SECRET" not in text
    if path in ("/redirect-internal-service", "/script-navigation"):
        assert text.startswith(f"Error: {site}{path} led to an address browse does not open"), text
    wait_for(lambda: "127.0.0.2" in tools_module._remote._proxy.refused, timeout=10,
             what="the guard to refuse")
    assert Internal.hits == []


def test_guard_proxy_for_a_remote_browser_wants_its_password(remote_browse, site, tools_module):
    remote_browse(f"{site}/page")
    proxy = tools_module._remote._proxy
    port = proxy._server.sockets[0].getsockname()[1]

    async def ask(authorization: str = "") -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {site}/page HTTP/1.1\r\nHost: x\r\n{authorization}\r\n".encode())
        status = await reader.readline()
        writer.close()
        return status

    assert remote_browse.loop.run_until_complete(ask()).startswith(b"HTTP/1.1 407")
    wrong = "Proxy-Authorization: Basic YnJvd3NlOndyb25n\r\n"  # browse:wrong
    assert remote_browse.loop.run_until_complete(ask(wrong)).startswith(b"HTTP/1.1 407")


def test_unreachable_browser_service_is_a_tool_error(tools_module, monkeypatch):
    monkeypatch.setenv("BROWSE_CDP_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BROWSE_ALLOW_PRIVATE", "127.0.0.1")
    remote = tools_module.RemoteBrowser()

    async def attempt():
        try:
            return await remote.open("http://127.0.0.1:9/")
        except tools_module.BrowserUnavailable as e:
            return str(e)

    assert asyncio.run(attempt()).startswith("cannot use the browser at BROWSE_CDP_URL")


def start_service(port: int, profile) -> subprocess.Popen:
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))))
    process = subprocess.Popen([binary, "--headless=new", f"--remote-debugging-port={port}", "--no-first-run",
                                "--no-sandbox", f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "DevTools listening on" in line:
            return process
    raise AssertionError("Chromium did not open its DevTools port")


def test_a_browser_service_that_restarts_is_reconnected_to(tools_module, site, tmp_path, monkeypatch):
    """The service's Chromium dies (a crash, a restart of the service): the next call connects again."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BROWSE_CDP_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("BROWSE_ALLOW_PRIVATE", "127.0.0.1")
    monkeypatch.setenv("BROWSE_TIMEOUT", "5")
    remote, loop = tools_module.RemoteBrowser(), asyncio.new_event_loop()

    async def open_page():  # as browse() does: a call that finds the browser gone is tried once more
        for _ in range(2):
            result = await remote.open(f"{site}/page")
            if result is not None:
                return result
        raise AssertionError("no page from a restarted service")

    service = start_service(port, tmp_path / "first")
    try:
        assert loop.run_until_complete(open_page()).success
        service.kill()
        service.wait(10)
        service = start_service(port, tmp_path / "second")
        assert "pembrolizumab" in loop.run_until_complete(open_page()).markdown
    finally:
        loop.run_until_complete(remote.close())
        loop.close()
        service.kill()
        service.wait(10)
