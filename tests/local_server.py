"""A real HTTP server on 127.0.0.1 for the download tests: no network beyond this machine."""

from __future__ import annotations

import http.server
import threading


class Server:
    """Serves registered paths from a thread; `truncate` closes the connection midway."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, bool]] = {}
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, truncate = routes.get(self.path, (404, b"not found", False))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if truncate else body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def serve(self, path: str, body: bytes, status: int = 200, truncate: bool = False) -> str:
        """Answer GET `path` with `status` and `body` from now on; return its URL."""
        self.routes[path] = (status, body, truncate)
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
