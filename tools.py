"""Tools the teacher can call. Written for rnow, so this file also works unchanged with `rnow run`.

Add a tool: write a function with type hints and a docstring (the docstring is what the model reads)
and put @tool on it. Sync tools run in worker threads, async tools on the event loop. Return a string,
or anything JSON-serialisable. See `calculate` below for a complete offline example.

Settings, from the environment (or .env):
    BROWSE_TIMEOUT        seconds a page may take to load (default 30)
    BROWSE_ALLOW_PRIVATE  1 to let browse open loopback/private/link-local addresses, or a comma list
                          of the hosts or networks to allow (e.g. 127.0.0.1,10.1.0.0/16); default: none
    CHROME_PATH           a Chromium/Chrome binary to use when Playwright's own browser is not installed
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import ipaddress
import operator
import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlparse

from rnow.core.tool import tool

# Crawl4AI reads these when it is imported: keep its files out of the user's home (and out of the
# project folder that `rnow run` uploads), and keep its banner off the progress bar.
os.environ.setdefault("CRAWL4_AI_BASE_DIRECTORY", str(Path(tempfile.gettempdir()) / f"crawl4ai-{os.getuid()}"))
os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")


# --------------------------------------------------------------------------------------------------
# Example of an offline tool
# --------------------------------------------------------------------------------------------------

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv,
              ast.USub: operator.neg, ast.UAdd: operator.pos}


@tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "(1250 * 0.07) / 12". Supports + - * / // % ** and parentheses."""

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
        return str(evaluate(ast.parse(expression, mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as e:
        return f"Error: {e}"


# --------------------------------------------------------------------------------------------------
# browse: one shared headless browser for the whole run
# --------------------------------------------------------------------------------------------------

MAX_REDIRECTS = 10


@tool(timeout=90)
async def browse(url: str) -> str:
    """Open a web page in a browser and return its content as markdown (JavaScript-rendered text included), with the final URL and HTTP status. Use full http(s) URLs."""
    problem = await url_problem(url)
    if problem:
        return f"Error: {problem}"
    try:
        crawler = await _browser.crawler()
    except BrowserUnavailable as e:
        return f"Error: {e}"
    from crawl4ai import CacheMode, CrawlerRunConfig

    config = CrawlerRunConfig(cache_mode=CacheMode.BYPASS, page_timeout=int(browse_timeout() * 1000),
                              verbose=False)
    try:
        result = await crawler.arun(url, config=config)
    except Exception as e:  # Crawl4AI raises on a few inputs instead of reporting them
        return f"Error: could not open {url}: {first_line(str(e))}"
    return describe_result(url, result)


def describe_result(url: str, result) -> str:
    final_url = getattr(result, "redirected_url", None) or url
    status = getattr(result, "status_code", None)
    markdown = str(result.markdown or "").strip()
    error = result.error_message or ""
    blocked_as_bot = error.startswith("Blocked by anti-bot protection")
    if not result.success and not (blocked_as_bot and markdown):  # Crawl4AI calls any short page "blocked"
        if "timeout" in error.lower() or "ERR_TIMED_OUT" in error:
            return f"Error: {url} did not load within {browse_timeout():g} s."
        if _GUARD_MARK in error:
            return f"Error: {url} redirected to an address browse does not open (private network)."
        return f"Error: could not open {url}: {first_line(error or 'unknown error')}"
    if status and status >= 400:
        return f"Error: HTTP {status} for {final_url}"
    headers = {k.lower(): v for k, v in (getattr(result, "response_headers", None) or {}).items()}
    content_type = headers.get("content-type", "")
    if content_type and "html" not in content_type and "text" not in content_type and not markdown:
        return f"Error: {final_url} is not a web page (content-type {content_type})."
    return f"URL: {final_url}\nStatus: {status or 'unknown'}\n\n{markdown or '(the page has no text)'}"


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)[:300]


def browse_timeout() -> float:
    return float(os.environ.get("BROWSE_TIMEOUT", "30"))


class BrowserUnavailable(Exception):
    pass


class SharedBrowser:
    """Starts one Crawl4AI crawler on first use; every browse call shares it (~13x faster than one each)."""

    def __init__(self) -> None:
        self._crawler = None
        self._lock: asyncio.Lock | None = None

    async def crawler(self):
        if self._crawler is not None:
            return self._crawler
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._crawler is None:
                self._crawler = await self._start()
        return self._crawler

    async def _start(self):
        from crawl4ai import AsyncWebCrawler, BrowserConfig

        executable = find_browser()
        config = BrowserConfig(headless=True, verbose=False, extra_args=[
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-quic", "--no-first-run"])
        crawler = AsyncWebCrawler(config=config)
        strategy = crawler.crawler_strategy
        if executable:
            use_executable(strategy, executable)
        strategy.set_hook("on_page_context_created", guard_page)
        try:
            await crawler.start()
        except Exception as e:
            raise BrowserUnavailable(f"the browser did not start: {first_line(str(e))}") from None
        return crawler

    async def close(self) -> None:
        if self._crawler is not None:
            crawler, self._crawler = self._crawler, None
            await crawler.close()


def use_executable(strategy, executable: str) -> None:
    # Crawl4AI has no setting for the browser binary; it builds Playwright's launch() arguments in
    # BrowserManager._build_browser_args (crawl4ai 0.9.x, pinned in requirements.txt).
    manager = strategy.browser_manager
    build = manager._build_browser_args
    manager._build_browser_args = lambda: {**build(), "executable_path": executable}


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
                             "`sudo apt-get install -y chromium` (Debian/Ubuntu) or `playwright install chromium`, "
                             "or set CHROME_PATH to a Chrome/Chromium binary.")


def playwright_chromium_installed() -> bool:
    root = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    return any(root.glob("chromium-*/chrome-linux*/chrome")) or any(root.glob("chromium-*/chrome-mac*/*.app"))


_browser = SharedBrowser()


async def aclose() -> None:
    """Called by the generator when the run ends (also after Ctrl-C): no browser is left running."""
    await _browser.close()


# --------------------------------------------------------------------------------------------------
# Safety: the model picks the URLs, and pages can carry prompt injections
# --------------------------------------------------------------------------------------------------

_GUARD_MARK = "ERR_BLOCKED_BY_CLIENT"  # how Chromium reports a request guard_page aborted


async def url_problem(url: str) -> str | None:
    """Why browse must not open this URL, or None. Only http(s) to public addresses, unless allowed."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https"):
        return f"only http:// and https:// URLs can be browsed, not {url[:100]!r}"
    host = parsed.hostname
    if not host:
        return f"{url[:100]!r} has no host"
    try:
        addresses = await resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except OSError:
        return f"could not resolve host {host!r} (DNS error); check the URL"
    for address in addresses:
        if not is_public(address) and not is_allowed(host, address):
            return (f"{host} resolves to {address}, a private/internal address; browse only opens public "
                    "sites (set BROWSE_ALLOW_PRIVATE to allow it)")
    return None


async def resolve(host: str, port: int) -> list[ipaddress._BaseAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def is_public(address: ipaddress._BaseAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified)


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


async def guard_page(page, context=None, **kwargs):
    """Check every request the page makes, and every redirect hop of a navigation, before it is sent."""

    async def guard(route):
        request = route.request
        if urlparse(request.url).scheme in ("data", "blob", "about"):
            await route.continue_()
            return
        if await url_problem(request.url):
            await route.abort("blockedbyclient")
            return
        if not request.is_navigation_request():
            await route.continue_()
            return
        # Playwright does not show redirect hops to a route handler, so fetch one hop at a time here.
        try:
            response = await route.fetch(max_redirects=0, timeout=browse_timeout() * 1000)
        except Exception as e:  # the page timed out or went away: let the crawl report it
            with contextlib.suppress(Exception):
                await route.abort("timedout" if "timeout" in str(e).lower() else "failed")
            return
        location = response.headers.get("location")
        if 300 <= response.status < 400 and location and await url_problem(urljoin(request.url, location)):
            await route.abort("blockedbyclient")
            return
        with contextlib.suppress(Exception):
            await route.fulfill(response=response)

    await page.route("**/*", guard)
    return page
