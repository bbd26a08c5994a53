"""Tools the teacher can call. Written for rnow, so this file also works unchanged with `rnow run`.

Add a tool: write a function with type hints and a docstring (the docstring is what the model reads)
and put @tool on it. Sync tools run in worker threads, async tools on the event loop. Return a string,
or anything JSON-serialisable. The tools come first (`calculate`, a complete offline example, and `browse`);
the browser and its guard follow, marked as machinery. If a tool's own machinery fails (not the input),
raise ToolUnavailable: that rollout is not written, and runs again on the next run.

Settings, from the environment (or .env):
    BROWSE_TIMEOUT        seconds a page may take to load (default 30)
    BROWSE_ALLOW_PRIVATE  1 to let browse open loopback/private/link-local addresses, or a comma list
                          of the hosts or networks to allow (e.g. 127.0.0.1,10.1.0.0/16); default: none
    CHROME_PATH           a Chromium/Chrome binary to use when Playwright's own browser is not installed
    BROWSE_CDP_URL        use a browser service instead of a local Chromium: a Chromium started with
                          --remote-debugging-port elsewhere, or Browserless (http://host:9222 or ws://...)
    BROWSE_GUARD_HOST     with BROWSE_CDP_URL on another machine: the address of this machine that the
                          browser can reach, where the guard proxy listens (default 127.0.0.1)
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import html
import ipaddress
import operator
import os
import secrets
import shutil
import socket
import tempfile
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

from rnow.core.tool import tool

# Crawl4AI reads these when it is imported: keep its files out of the user's home (and out of the
# project folder that `rnow run` uploads), and keep its banner off the progress bar.
os.environ.setdefault("CRAWL4_AI_BASE_DIRECTORY",
                      str(Path(tempfile.gettempdir()) / f"crawl4ai-{os.getuid()}"))
os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")


# ==================================================================================================
# The tools: what you edit. Add a function with type hints, a docstring and @tool.
# ==================================================================================================


class ToolUnavailable(Exception):
    """Raise it when a tool's own machinery failed (its browser, a service it needs), not the page or the
    arguments: the generator then writes no sample from that rollout (the teacher would have answered
    without the tool); it goes to the failed file and runs again on the next run. The generator knows
    it by its name, so any tools.py can define its own class ToolUnavailable(Exception)."""


# An offline tool: exact arithmetic.

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv,
              ast.USub: operator.neg, ast.UAdd: operator.pos}


# CPython's ast.parse keeps its recursion count in state every thread shares (3.11), and tool calls run on
# threads of their own: two parses at once could fail with "AST constructor recursion depth mismatch". One at
# a time, then (a parse takes microseconds); bench/calculate_threads.py is the stress check.
_PARSING = threading.Lock()


@tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "(1250 * 0.07) / 12". Supports + - * / // % ** and parentheses."""  # noqa: E501  (a tool's description, sent as written)

    def evaluate(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = evaluate(node.left), evaluate(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 1000:
                raise ValueError("exponent too large")
            return _OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](evaluate(node.operand))
        raise ValueError(f"unsupported syntax: {ast.unparse(node)!r}")

    try:
        with _PARSING:
            tree = ast.parse(expression, mode="eval")
        return str(evaluate(tree.body))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as e:
        return f"Error: {e}"


# browse: a real headless browser (one for the whole run), behind a guard that keeps it off internal
# addresses. Everything it needs is the machinery below.


@tool(timeout=90)
async def browse(url: str) -> str:
    """Open a web page in a browser and return its content as markdown (JavaScript-rendered text included), with the final URL and HTTP status. Use full http(s) URLs."""  # noqa: E501  (a tool's description, sent as written)
    problem = await url_problem(url)
    if problem:
        return f"Error: {problem}"
    browser = _remote if os.environ.get("BROWSE_CDP_URL") else _browser
    # A browser killed under a call (the OOM killer, a crash) is started again and the call tried once
    # more; a page is never described from a dead browser's "Unexpected error".
    for _ in range(2):
        result = await browser.open(url)
        if result is not None:
            return describe_result(url, result)
    raise ToolUnavailable(f"the browser died while opening {url}, and again after it was restarted")


# ==================================================================================================
# Machinery: the browser behind `browse` and its guard. You should not need to edit anything below.
# ==================================================================================================

MAX_REDIRECTS = 10


def describe_result(url: str, result) -> str:
    final_url = getattr(result, "redirected_url", None) or url
    status = getattr(result, "status_code", None)
    markdown = str(result.markdown or "").strip()
    error = result.error_message or ""
    headers = {k.lower(): v for k, v in (getattr(result, "response_headers", None) or {}).items()}
    if GUARD_HEADER.lower() in headers or REFUSED in markdown:  # it (or a redirect, or a script) led inside
        why = headers.get(GUARD_HEADER.lower()) or first_line(markdown.split(REFUSED, 1)[1].lstrip(": "))
        return f"Error: {url} led to an address browse does not open: {why}"
    if str(final_url).startswith("chrome-error:"):  # Chromium's own error page comes back as status 200
        return f"Error: could not open {url}: the browser showed an error page (blocked or unreachable)."
    blocked_as_bot = error.startswith("Blocked by anti-bot protection")
    if not result.success and not (blocked_as_bot and markdown):  # Crawl4AI calls any short page "blocked"
        if "timeout" in error.lower() or "ERR_TIMED_OUT" in error:
            return f"Error: {url} did not load within {browse_timeout():g} s."
        if "ERR_TUNNEL_CONNECTION_FAILED" in error:
            return (f"Error: could not open {url}: the connection was refused (an internal address, or the "
                    "host is down).")
        return f"Error: could not open {url}: {first_line(error or 'unknown error')}"
    if status and status >= 400:
        return f"Error: HTTP {status} for {final_url}"
    content_type = headers.get("content-type", "")
    if content_type and "html" not in content_type and "text" not in content_type and not markdown:
        return f"Error: {final_url} is not a web page (content-type {content_type})."
    return f"URL: {final_url}\nStatus: {status or 'unknown'}\n\n{markdown or '(the page has no text)'}"


# What the browser's death looks like from a call that was in flight, in whatever words Crawl4AI wraps it
# ("Unexpected error in _crawl_web at line 58 in run_async (.../playwright/...)"): the browser's failure,
# not the page's, even when Playwright has not yet noticed the browser is gone.
BROWSER_DEATH = ("has been closed", "browser has disconnected", "target closed", "connection closed",
                 "/playwright/", "browser closed", "pipe closed")


def died_under_call(error: str) -> bool:
    text = error.lower()
    return any(sign in text for sign in BROWSER_DEATH)


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)[:300]


def browse_timeout() -> float:
    return float(os.environ.get("BROWSE_TIMEOUT", "30"))


class BrowserUnavailable(ToolUnavailable):
    """No browser could be started or reached."""


def failed_result(message: str) -> SimpleNamespace:
    """A page that could not be opened, shaped like Crawl4AI's result."""
    return SimpleNamespace(success=False, markdown="", error_message=message, status_code=None,
                           redirected_url=None, response_headers={})


class SharedBrowser:
    """Starts one Crawl4AI crawler on first use; every browse call shares it (~13x faster than one each)."""

    def __init__(self) -> None:
        self._crawler = None
        self._dead = None  # a crawler whose browser died under a call, though Playwright may not know it yet
        self._proxy: GuardProxy | None = None
        self._lock: asyncio.Lock | None = None

    async def open(self, url: str):
        """Crawl4AI's result for the page; None when the browser died under the call."""
        from crawl4ai import CacheMode, CrawlerRunConfig

        crawler = await self.crawler()
        config = CrawlerRunConfig(cache_mode=CacheMode.BYPASS, page_timeout=int(browse_timeout() * 1000),
                                  verbose=False)
        try:
            result = await crawler.arun(url, config=config)
        except Exception as e:  # Crawl4AI raises on a few inputs instead of reporting them
            result = failed_result(str(e))
        if self.alive(crawler) and (result.success or not died_under_call(result.error_message or "")):
            return result
        self._dead = crawler  # the next call starts another browser, even if this one still looks connected
        return None

    @staticmethod
    def alive(crawler) -> bool:
        browser = getattr(crawler.crawler_strategy.browser_manager, "browser", None)
        return browser is None or browser.is_connected()

    async def crawler(self):
        """The running crawler; started on first use, and again after its browser died."""
        if self._crawler is not None and self._crawler is not self._dead and self.alive(self._crawler):
            return self._crawler
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._crawler is not None and (self._crawler is self._dead or not self.alive(self._crawler)):
                await self.close()  # what is left of the dead one: its pages, its guard proxy
            if self._crawler is None:
                self._crawler = await self._start()
        return self._crawler

    async def _start(self):
        from crawl4ai import AsyncWebCrawler, BrowserConfig

        executable = find_browser()
        config = BrowserConfig(headless=True, verbose=False, extra_args=[
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-quic", "--no-first-run",
            # WebRTC's UDP does not go through a proxy: refuse it, so the guard sees every connection.
            "--force-webrtc-ip-handling-policy=disable_non_proxied_udp"])
        crawler = AsyncWebCrawler(config=config)
        self._proxy = GuardProxy()
        strategy = crawler.crawler_strategy
        configure_launch(strategy, executable, await self._proxy.start())
        strategy.set_hook("on_page_context_created", prepare_context)
        try:
            await crawler.start()
        except Exception as e:
            await self._proxy.close()
            raise BrowserUnavailable(f"the browser did not start: {first_line(str(e))}") from None
        return crawler

    async def close(self) -> None:
        if self._crawler is not None:
            crawler, self._crawler = self._crawler, None
            with contextlib.suppress(Exception):  # a dead browser's close may fail; nothing is left to close
                await asyncio.wait_for(crawler.close(), 30)
        if self._proxy is not None:
            proxy, self._proxy = self._proxy, None
            await proxy.close()


class RemoteBrowser:
    """BROWSE_CDP_URL: pages open in a browser service over the Chrome DevTools Protocol, so browse capacity
    scales apart from the generator. The run gets its own browser context whose only proxy is the guard
    (with a password of the run's own, since it may listen beyond loopback), service workers blocked:
    the same guarantee as the local browser. Pages become markdown with Crawl4AI's own generator."""

    def __init__(self) -> None:
        self._playwright = self._browser = self._context = None
        self._proxy: GuardProxy | None = None
        self._lock: asyncio.Lock | None = None

    async def open(self, url: str):
        """The page, shaped like Crawl4AI's result; None when the browser went away under the call."""
        browser, context = await self._ready()
        try:
            page = await context.new_page()
        except Exception:
            if browser.is_connected():
                raise
            return None
        try:
            response = await page.goto(url, timeout=browse_timeout() * 1000, wait_until="domcontentloaded")
            await page.wait_for_timeout(100)  # as Crawl4AI does: text that scripts add at once
            html_text, final_url = await page.content(), page.url
            headers = await response.all_headers() if response else {}
        except Exception as e:  # Playwright's errors: timeouts, refused tunnels, ...
            message = str(e)
            if "Timeout" in type(e).__name__ or "Timeout" in message.split("\n", 1)[0]:
                message = "timeout: " + message
            return failed_result(message) if browser.is_connected() else None
        finally:
            with contextlib.suppress(Exception):
                await page.close()
        from crawl4ai.markdown_generation_strategy import DefaultMarkdownGenerator

        markdown = DefaultMarkdownGenerator().generate_markdown(html_text, base_url=final_url).raw_markdown
        return SimpleNamespace(success=True, markdown=markdown, error_message="", redirected_url=final_url,
                               status_code=response.status if response else None, response_headers=headers)

    async def _ready(self):
        """(browser, context), connected first, and again after the connection or the browser was lost."""
        if self._context is None or not self._browser.is_connected():
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._context is not None and not self._browser.is_connected():
                    await self.close()
                if self._context is None:
                    await self._start()
        return self._browser, self._context

    async def _start(self) -> None:
        from playwright.async_api import async_playwright

        cdp_url = os.environ["BROWSE_CDP_URL"]
        host = os.environ.get("BROWSE_GUARD_HOST", "127.0.0.1")
        password = secrets.token_urlsafe(18)
        self._proxy = GuardProxy(host, credentials=("browse", password))
        port = await self._proxy.start()
        self._playwright = await async_playwright().start()
        try:
            self._browser = await self._playwright.chromium.connect_over_cdp(cdp_url, timeout=30_000)
            self._context = await self._browser.new_context(
                service_workers="block",
                # <-loopback>: Chromium would otherwise send loopback past the proxy, unchecked
                proxy={"server": f"http://{host}:{port}", "bypass": "<-loopback>",
                       "username": "browse", "password": password})
            await self._context.add_init_script(BLOCK_SERVICE_WORKERS)
        except Exception as e:
            await self.close()
            why = first_line(str(e))
            raise BrowserUnavailable(f"cannot use the browser at BROWSE_CDP_URL: {why}") from None

    async def close(self) -> None:
        if self._context is not None:
            with contextlib.suppress(Exception):
                await self._context.close()  # ours only: the browser service itself goes on
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                await self._playwright.stop()
        if self._proxy is not None:
            await self._proxy.close()
        self._playwright = self._browser = self._context = self._proxy = None


def configure_launch(strategy, executable: str | None, proxy_port: int) -> None:
    # Crawl4AI has no setting for the browser binary, nor for a proxy that loopback goes through too; it
    # builds Playwright's launch() arguments in BrowserManager._build_browser_args (crawl4ai 0.9.x, pinned
    # in requirements.txt). Playwright proxies loopback as well ("<-loopback>") unless told otherwise.
    manager = strategy.browser_manager
    build = manager._build_browser_args
    extra = {"proxy": {"server": f"http://127.0.0.1:{proxy_port}"}}
    if executable:
        extra["executable_path"] = executable
    manager._build_browser_args = lambda: {**build(), **extra}


SYSTEM_BROWSERS = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome",
                   "google-chrome-stable", "/opt/google/chrome/chrome")


def find_browser(system_browsers: tuple[str, ...] = SYSTEM_BROWSERS) -> str | None:
    """None when Playwright's own Chromium is installed; else CHROME_PATH, else a system Chromium/Chrome."""
    if playwright_chromium_installed():
        return None
    candidates = [os.environ.get("CHROME_PATH")] + [shutil.which(name) or name for name in system_browsers]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise BrowserUnavailable("browse needs Chromium and none was found. Install one: "
                             "`sudo apt-get install -y chromium` (Debian/Ubuntu) or "
                             "`playwright install chromium`, or set CHROME_PATH to a Chrome/Chromium binary.")


def playwright_chromium_installed() -> bool:
    root = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    return any(root.glob("chromium-*/chrome-linux*/chrome")) or any(root.glob("chromium-*/chrome-mac*/*.app"))


_browser = SharedBrowser()
_remote = RemoteBrowser()


async def aclose() -> None:
    """Called by the generator when the run ends (also after Ctrl-C): no browser is left running."""
    await _browser.close()
    await _remote.close()


# --------------------------------------------------------------------------------------------------
# Safety: the model picks the URLs, and pages can carry prompt injections
# --------------------------------------------------------------------------------------------------
# Every connection the browser makes (the page, its redirects, subresources, iframes, popups, workers,
# service workers, web sockets) goes through GuardProxy, a small HTTP proxy on loopback. It resolves
# the host once, refuses it unless every address is globally routable (or allowed), and connects to
# the very address it checked, so a DNS answer that changes between check and use (rebinding) cannot
# reach an internal address. Chromium is started with it as its only proxy, loopback included.

GUARD_HEADER = "X-Browse-Guard"
REFUSED = "browse refused this address"  # the text of the proxy's refusal page


async def url_problem(url: str) -> str | None:
    """Why browse must not open this URL, or None. Only http(s) to public addresses, unless allowed."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https"):
        return f"only http:// and https:// URLs can be browsed, not {url[:100]!r}"
    if not parsed.hostname:
        return f"{url[:100]!r} has no host"
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        return f"{url[:100]!r} has an invalid port"
    _, problem = await checked_address(parsed.hostname, port)
    return problem


async def checked_address(host: str, port: int) -> tuple[ipaddress._BaseAddress | None, str | None]:
    """(the address to connect to, None), or (None, why not). Every address the host has must pass."""
    try:
        addresses = await resolve(host, port)
    except (OSError, UnicodeError, ValueError):
        return None, f"could not resolve host {host!r} (DNS error); check the URL"
    if not addresses:
        return None, f"could not resolve host {host!r}"
    for address in addresses:
        if not is_public(address) and not is_allowed(host, address):
            return None, (f"{host} resolves to {address}, a private/internal address; browse only opens "
                          "public sites (set BROWSE_ALLOW_PRIVATE to allow it)")
    return addresses[0], None


async def resolve(host: str, port: int) -> list[ipaddress._BaseAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # and 64:ff9b:1::/48 (local use) is not global either


def is_public(address: ipaddress._BaseAddress) -> bool:
    """Globally routable, and so is any IPv4 address embedded in it. Shared address space (100.64/10,
    where some clouds serve metadata), benchmarking, documentation and reserved ranges are not."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        return all(is_public(inner) for inner in embedded_ipv4(address))
    return True


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries: mapped, compatible, 6to4, Teredo, NAT64."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo:
        found.extend(address.teredo)
    if address in NAT64 or int(address) >> 32 == 0:  # 64:ff9b::a.b.c.d, ::a.b.c.d
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_allowed(host: str, address: ipaddress._BaseAddress) -> bool:
    setting = os.environ.get("BROWSE_ALLOW_PRIVATE", "").strip()
    if setting.lower() in ("1", "true", "yes"):
        return True
    for item in filter(None, (part.strip() for part in setting.split(","))):
        if item.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return False


class GuardProxy:
    """HTTP proxy (plain requests and CONNECT tunnels) that only connects to checked public addresses."""

    def __init__(self, host: str = "127.0.0.1", credentials: tuple[str, str] | None = None) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()
        self.host = host
        self._authorization = ("Basic " + base64.b64encode(":".join(credentials).encode()).decode()
                               if credentials else None)
        self.refused: list[str] = []  # hosts refused, for the tests and for debugging

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, 0, limit=1 << 16)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(asyncio.current_task())
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, UnicodeError):
            pass
        finally:
            self._connections.discard(asyncio.current_task())
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        if self._authorization and not self._authorized(header_lines):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"browse\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            return await writer.drain()
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            host, port, first_bytes = host.strip("[]"), int(port), b""
        else:
            url = urlparse(target)
            if url.scheme != "http" or not url.hostname:
                return await self._refuse(writer, 400, f"not a proxy request: {target[:100]}")
            host, port = url.hostname, url.port or 80
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            headers = [line for line in header_lines if line and line.split(":", 1)[0].strip().lower()
                       not in ("connection", "proxy-connection", "keep-alive", "proxy-authorization")]
            # One request per connection: the next request may be for another host, checked anew.
            request_head = [f"{method} {path} {version}", *headers, "Connection: close", "", ""]
            first_bytes = "\r\n".join(request_head).encode("latin-1")
        address, problem = await checked_address(host, port)
        if problem:
            self.refused.append(host)
            return await self._refuse(writer, 403, problem)
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(str(address), port), browse_timeout())
        except (OSError, asyncio.TimeoutError) as e:
            return await self._refuse(writer, 502, f"cannot connect to {host}:{port}: {e}", refused=False)
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            upstream_writer.write(first_bytes)
        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()

    def _authorized(self, header_lines: list[str]) -> bool:
        given = [value.strip() for name, _, value in (line.partition(":") for line in header_lines)
                 if name.strip().lower() == "proxy-authorization"]
        return bool(given) and secrets.compare_digest(given[0], self._authorization)

    @staticmethod
    async def _refuse(writer: asyncio.StreamWriter, status: int, why: str, refused: bool = True) -> None:
        body = f"<html><body><p>{REFUSED}: {html.escape(why)}</p></body></html>".encode()
        marker = f"{GUARD_HEADER}: {why}\r\n".encode("latin-1", "replace") if refused else b""
        writer.write(f"HTTP/1.1 {status} Refused\r\nContent-Type: text/html\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
                     + marker + b"\r\n" + body)
        await writer.drain()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.write_eof()


# Playwright's own way of blocking service workers (serviceWorkers: "block"), for every page of a context.
BLOCK_SERVICE_WORKERS = ("if (navigator.serviceWorker) navigator.serviceWorker.register = "
                         "async () => { throw new Error('service workers are blocked by browse'); };")
_prepared_contexts: "weakref.WeakSet" = weakref.WeakSet()


async def prepare_context(page, context=None, **kwargs):
    """Crawl4AI hook: no service workers in any page of the context (the proxy guards them anyway)."""
    if context is not None and context not in _prepared_contexts:
        _prepared_contexts.add(context)
        await context.add_init_script(BLOCK_SERVICE_WORKERS)
    return page
