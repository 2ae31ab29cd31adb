"""Real HTTP servers on loopback for the tests: an ASGI app in a thread, and a fault-injecting proxy."""

from __future__ import annotations

import http.server
import threading
import time

import httpx
import uvicorn

from rayestate.localstack import free_port


class AppServer:
    """A real uvicorn server for an ASGI app, in a thread, on a free loopback port."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> AppServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


class FaultProxy:
    """Stands in for the flaky outside API: a tiny HTTP server on loopback that plays a script.

    Each request consumes the next action: ``"pass"`` forwards to ``upstream`` (the real data
    API), ``500`` answers HTTP 500, ``("sleep", s)`` stalls past the client's timeout,
    ``"drop"`` closes the connection without an answer, ``(status, body_bytes)`` answers that.
    When the script is used up, requests pass through.
    """

    def __init__(self, upstream: str | None, script: list):
        self.upstream, self.script, self.requests = upstream, list(script), 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                proxy.requests += 1
                action = proxy.script.pop(0) if proxy.script else "pass"
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                    action = "pass"
                if action == "pass":
                    upstream = httpx.get(proxy.upstream + self.path, timeout=60)
                    status, body = upstream.status_code, upstream.content
                elif action == 500:
                    status, body = 500, b'{"detail": "injected failure"}'
                else:
                    status, body = action
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
