"""A headless Chromium driven over the DevTools protocol with a ~60-line websocket client (stdlib only).

``render(html_path, screenshot)`` loads a local file, collects console errors, uncaught exceptions and
failed loads, evaluates a visibility check for every report section and saves a full-page screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["find_chromium", "ensure_chromium", "render"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> tuple[str | None, str]:
    """The browser path, installing Debian's ``chromium`` with apt-get where missing and possible; else why not."""
    path = find_chromium()
    if path:
        return path, ""
    if shutil.which("apt-get") is None:
        return None, "chromium is not installed and apt-get is not available"
    if os.geteuid() != 0:
        return None, "chromium is not installed and installing it needs root (apt-get install -y chromium)"
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    try:
        if subprocess.run(install, capture_output=True, timeout=600).returncode != 0:  # a fresh machine: no package lists yet
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, check=True)
            subprocess.run(install, capture_output=True, timeout=600, check=True)
    except (subprocess.SubprocessError, OSError) as err:
        return None, f"chromium is not installed and apt-get install chromium failed ({err.__class__.__name__})"
    path = find_chromium()
    return (path, "") if path else (None, "apt-get ran but no chromium binary was found")


class _WebSocket:
    """The client side of RFC 6455, enough for CDP: text frames, masked, no extensions."""

    def __init__(self, url: str, timeout: float = 30.0):
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                                   if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def recv(self) -> str:
        message = b""
        while True:
            b1, b2 = self._read(2)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            message += payload
            if b1 & 0x80:
                return message.decode(errors="replace")


def render(html: Path, screenshot: Path, *, browser: str, selectors_js: str, width: int = 1200) -> dict:
    """Load ``html`` in headless Chromium; returns {"errors": [...], "check": <selectors_js value>}."""
    profile = tempfile.mkdtemp(prefix="guardgen-chromium-")
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             f"--window-size={width},900", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ws = None
    try:
        port = None
        deadline = time.time() + 30
        port_file = Path(profile) / "DevToolsActivePort"
        while time.time() < deadline and port is None:
            if port_file.is_file() and port_file.read_text().strip():
                port = int(port_file.read_text().split()[0])
            time.sleep(0.1)
        if port is None:
            raise RuntimeError("chromium did not open its DevTools port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            pages = json.loads(response.read())
        ws = _WebSocket(next(p for p in pages if p.get("type") == "page")["webSocketDebuggerUrl"])
        counter, errors = [0], []

        def call(method: str, **params):
            counter[0] += 1
            ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == counter[0]:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
                _collect(msg, errors)

        for domain in ("Runtime", "Log", "Page", "Network"):
            call(f"{domain}.enable")
        call("Page.navigate", url=html.resolve().as_uri())
        end = time.time() + 30
        while time.time() < end:
            msg = json.loads(ws.recv())
            _collect(msg, errors)
            if msg.get("method") == "Page.loadEventFired":
                break
        time.sleep(0.3)
        check = call("Runtime.evaluate", expression=selectors_js, returnByValue=True)["result"].get("value")
        shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return {"errors": errors, "check": check}
    finally:
        if ws is not None:
            ws.sock.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _collect(msg: dict, errors: list) -> None:
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        errors.append(("console", " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))))
    elif method == "Runtime.exceptionThrown":
        errors.append(("exception", params.get("exceptionDetails", {}).get("text", "")))
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        errors.append(("log", params["entry"].get("text", "")))
    elif method == "Network.loadingFailed":
        errors.append(("network", params.get("errorText", "")))
    elif method == "Network.requestWillBeSent":
        url = params.get("request", {}).get("url", "")
        if not url.startswith(("file:", "data:", "about:")):
            errors.append(("network", f"request to {url}"))
