"""Real HTTP servers on loopback for the tests: an ASGI app in a thread, and a fault-injecting proxy."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time

import httpx
import uvicorn

from rayestate.localstack import free_port

# Throwaway credentials for the local moto server only; they grant nothing anywhere else.
MOTO_KEY, MOTO_SECRET = "moto-test-key", "moto-test-secret"


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


#: FaultProxy action: hold the request without answering until the client gives up (see FaultProxy).
STALL = "stall"


class FaultProxy:
    """Stands in for the flaky outside API: a tiny HTTP server on loopback that plays a script.

    Each request consumes the next action: ``"pass"`` forwards to ``upstream`` (the real data
    API), ``500`` answers HTTP 500, ``"drop"`` closes the connection without an answer,
    ``(status, body_bytes)`` answers that, and :data:`STALL` holds the request unanswered. When
    the script is used up, requests pass through.

    A stall is ended by an event, not a clock: the next request to arrive (the client timed out
    and retried) or the proxy closing releases it, and the stalled request is then dropped without
    ever reaching ``upstream`` (an abandoned request must not consume a batch). So the client's
    timeout is the only clock, and it can be generous: it only has to be longer than a normal
    answer, never shorter than a sleep. ``arrivals`` lists each request's action in arrival order.
    """

    def __init__(self, upstream: str | None, script: list):
        self.upstream, self.script = upstream, list(script)
        self.arrivals: list = []
        self._lock = threading.Lock()
        self._stalls: list[threading.Event] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                action, released = proxy._arrive()
                if action == STALL:
                    released.wait()
                    action = "drop"
                if action == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):  # a stalled client may have closed its end already
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
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

    @property
    def requests(self) -> int:
        """Requests that arrived so far."""
        with self._lock:
            return len(self.arrivals)

    def _arrive(self) -> tuple[object, threading.Event]:
        """Record the request, release any stalled one (its client has moved on), take the next action.

        Returns the action and the event that releases this request if it stalls.
        """
        released = threading.Event()
        with self._lock:
            action = self.script.pop(0) if self.script else "pass"
            self.arrivals.append(action)
            stalled, self._stalls = self._stalls, [released] if action == STALL else []
        for event in stalled:
            event.set()
        return action, released

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            stalled, self._stalls = self._stalls, []
        for event in stalled:
            event.set()
        self._server.shutdown()
        self._server.server_close()
