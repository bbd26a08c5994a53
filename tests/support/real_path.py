"""The path between a user and the teacher, built from real parts on loopback.

Users reach OpenRouter at https://openrouter.ai through TLS and a CDN that compresses JSON; self-hosted
teachers sit behind nginx with its timeouts. Here nginx from Debian terminates TLS for openrouter.ai
with a certificate from a test CA, compresses JSON (`gzip on`), closes idle keep-alive connections
after 1 s, and proxies to the loopback teacher; `openrouter.ai` resolves to 127.0.0.1 only for the
commands run through `resolving()` (a private mount namespace with its own hosts file, or, where the
machine does not allow one, /etc/hosts edited under a lock and restored on every exit path).

Used by the tests (the `real_path` fixture) and by .ci/run (`python3 tests/support/real_path.py`), which
runs the README's first command against the default URL through it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "openrouter.ai"
HOSTS_LINE = f"127.0.0.1 {HOST}  # distillation tests: removed when they end\n"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


@dataclass
class Certificates:
    ca: Path  # the test CA alone
    bundle: Path  # the system's CAs plus the test CA: what SSL_CERT_FILE points at (pip still works with it)
    cert: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A test CA and a certificate for openrouter.ai signed by it (openssl from Debian)."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "3", "-subj", "/CN=Distillation Test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={HOST}")
    (folder / "server.ext").write_text(f"subjectAltName=DNS:{HOST}\nbasicConstraints=CA:FALSE\n"
                                       "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "3", "-extfile", "server.ext")
    system = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    bundle = folder / "bundle.pem"
    bundle.write_bytes((Path(system).read_bytes() if os.path.exists(system) else b"")
                       + (folder / "ca.pem").read_bytes())
    return Certificates(folder / "ca.pem", bundle, folder / "server.pem", folder / "server.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    gzip on;                       # what a CDN does for clients that accept it
    gzip_types application/json;
    gzip_min_length 20;
    gzip_proxied any;
    keepalive_timeout 1s;          # idle kept-alive connections close quickly: stale ones are common
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {host};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{teacher_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout {read_timeout};
        }}
    }}
    server {{
        listen 127.0.0.1:{plain_port};
        location / {{
            proxy_pass http://127.0.0.1:{teacher_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout {read_timeout};
        }}
    }}
}}
"""


class NginxFront:
    """nginx terminating TLS for openrouter.ai in front of a loopback teacher (and a plain-http server
    beside it on `plain_port`). Port 443 when it is free, so the default URL works; else another."""

    def __init__(self, teacher_port: int, folder: Path, port: int | None = None, read_timeout: str = "600s"):
        self.teacher_port, self.folder, self.read_timeout = teacher_port, folder, read_timeout
        self.port = port or (443 if port_is_free(443) else free_port())
        self.plain_port = free_port()
        self.certificates = make_certificates(folder / "tls")
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The teacher's URL through this front: the default URL when it listens on 443."""
        return f"https://{HOST}/api/v1" if self.port == 443 else f"https://{HOST}:{self.port}/api/v1"

    @property
    def is_default_url(self) -> bool:
        return self.port == 443

    def start(self) -> "NginxFront":
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
        conf = self.folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.folder, port=self.port, plain_port=self.plain_port,
                                          host=HOST, cert=self.certificates.cert, key=self.certificates.key,
                                          teacher_port=self.teacher_port, read_timeout=self.read_timeout))
        self.process = subprocess.Popen([binary, "-c", str(conf), "-p", str(self.folder), "-e",
                                         str(self.folder / "error.log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (listening(self.port) and listening(self.plain_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {self.process.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: let it close its connections
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------------------------------
# openrouter.ai -> 127.0.0.1, for the commands of one run only
# --------------------------------------------------------------------------------------------------

def private_namespace_works() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"],
                           capture_output=True) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


def hosts_file(folder: Path) -> Path:
    path = folder / "hosts"
    original = Path("/etc/hosts").read_text() if os.path.exists("/etc/hosts") else ""
    path.write_text(original + ("" if original.endswith("\n") or not original else "\n") + HOSTS_LINE)
    return path


def resolving(command: list[str], folder: Path) -> list[str]:
    """The command, run where openrouter.ai is 127.0.0.1: in a private mount namespace whose /etc/hosts
    is a copy with that line added. (Without one, use EditedHosts around the command instead.)"""
    hosts = hosts_file(folder)
    return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *command]


class EditedHosts:
    """Where no private namespace can be had: /etc/hosts gets the line, under a lock (so two runs of the
    tests never interleave their edits), and gets its old content back on every exit path: the end of
    the with-block, an exception, SIGTERM, SIGINT or the interpreter's exit."""

    LOCK = Path(tempfile.gettempdir()) / "distillation-tests-hosts.lock"

    def __init__(self) -> None:
        self.original: bytes | None = None
        self.lock_file = None

    def __enter__(self) -> "EditedHosts":
        self.lock_file = open(self.LOCK, "w")
        fcntl.flock(self.lock_file, fcntl.LOCK_EX)
        self.original = Path("/etc/hosts").read_bytes()
        atexit.register(self.restore)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            signal.signal(sig, lambda s, f, previous=previous: (self.restore(), signal.signal(s, previous),
                                                                 os.kill(os.getpid(), s)))
        Path("/etc/hosts").write_bytes(self.original + (b"" if self.original.endswith(b"\n") else b"\n")
                                       + HOSTS_LINE.encode())
        return self

    def restore(self) -> None:
        if self.original is not None:
            Path("/etc/hosts").write_bytes(self.original)
            self.original = None
        if self.lock_file is not None:
            with contextlib.suppress(OSError):
                self.lock_file.close()
            self.lock_file = None

    def __exit__(self, *exc: object) -> None:
        self.restore()


# --------------------------------------------------------------------------------------------------
# `python3 tests/support/real_path.py FOLDER`: what .ci/run starts before the README's first command
# --------------------------------------------------------------------------------------------------

def main() -> None:
    """Start the quick-start teacher and nginx in front of it; write FOLDER/env (SSL_CERT_FILE, the base
    URL, and the command prefix that resolves openrouter.ai); serve until SIGTERM."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_teacher import QUICK_START_PAGE, FakeTeacher, quick_start_step

    folder = Path(sys.argv[1]).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    teacher = FakeTeacher()
    teacher.default_step = quick_start_step(teacher)
    teacher.pages["/docs"] = QUICK_START_PAGE
    teacher.start()
    front = NginxFront(teacher.port, folder, port=443).start()
    namespace = private_namespace_works()
    prefix = " ".join(f"'{part}'" for part in resolving([], folder)) if namespace else ""
    lines = {"SSL_CERT_FILE": str(front.certificates.bundle), "BASE_URL": front.base_url,
             "RESOLVE_PREFIX": prefix, "TEACHER_URL": teacher.base_url}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stack:
        if not namespace:  # /etc/hosts itself, for as long as this serves, restored on every exit path
            stack.enter_context(EditedHosts())
        # lines for `source`
        (folder / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in lines.items()))
        try:
            while front.process.poll() is None:
                time.sleep(0.5)
        finally:
            front.stop()
            teacher.stop()


if __name__ == "__main__":
    main()
