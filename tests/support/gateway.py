"""LiteLLM's proxy, a real gateway, in front of the loopback teacher, set up as teams run it to share one
provider key: one model group with a requests-per-minute limit (`rpm`), the usage-based routing that
enforces it (its 429s say "No deployments available" and carry no standard Retry-After), no retries.

It runs from its own venv, .venv-gateway (tests/gateway-requirements.txt: the README's test command
makes it), or LITELLM_BIN. LITELLM_LOCAL_MODEL_COST_MAP keeps it from fetching its price list at start.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from real_path import free_port

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-gateway-master-key-for-tests-0123456789"  # what users of the gateway pass as their key
MODEL = "teacher"  # the model group's name, what the generator asks for (--model)


def litellm_binary() -> Path | None:
    for candidate in (os.environ.get("LITELLM_BIN"), ROOT / ".venv-gateway" / "bin" / "litellm"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class LiteLLMGateway:
    def __init__(self, upstream: str, rpm: int, folder: Path):
        self.upstream, self.rpm, self.folder = upstream, rpm, folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> "LiteLLMGateway":
        binary = litellm_binary()
        if binary is None:
            raise RuntimeError("LiteLLM's proxy is not installed: run the README's test command, which makes "
                               ".venv-gateway from tests/gateway-requirements.txt")
        config = self.folder / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            "      model: openai/loopback-teacher\n"
            f"      api_base: {self.upstream}\n"
            "      api_key: sk-upstream-provider-key\n"
            f"      rpm: {self.rpm}\n"
            "router_settings:\n"
            "  routing_strategy: usage-based-routing-v2\n"
            "  num_retries: 0\n"
            "litellm_settings:\n"
            "  num_retries: 0\n")
        env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "NO_PROXY": "127.0.0.1,localhost"}
        self.log = open(self.folder / "litellm.log", "wb")
        self.process = subprocess.Popen([str(binary), "--config", str(config), "--host", "127.0.0.1",
                                         "--port", str(self.port), "--num_workers", "1"], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("LiteLLM's proxy exited: "
                                   f"{(self.folder / 'litellm.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)  # polling a starting server: there is nothing to wait on but its port
        raise RuntimeError("LiteLLM's proxy did not start in time")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log.close()
