"""A local HTTP server that stands in for the Hugging Face hub in tests.

It serves registered bytes on 127.0.0.1 from a thread, counts the requests
per path, and can misbehave as a real connection does: announce the full
``Content-Length`` and close the connection after part of the body, or
announce no length at all.
"""
import collections
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Counter, Dict, Optional


@dataclass
class ServedFile:
    """What the server sends for one path.

    Attributes:
        data: The file's bytes.
        stop_after: Close the connection after this many body bytes (the
            header still announces ``len(data)``); ``None`` sends all.
        content_length: Send a ``Content-Length`` header.
    """
    data: bytes
    stop_after: Optional[int] = None
    content_length: bool = True


class FileServer:
    """Serves :class:`ServedFile` objects at ``http://127.0.0.1:PORT/path``.

    HTTP/1.0: the server closes the connection after each response, so a
    body cut short ends the client's read as a dropped connection does.
    """

    def __init__(self) -> None:
        self.files: Dict[str, ServedFile] = {}
        self.requests: Counter[str] = collections.Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests[self.path] += 1
                served = server.files.get(self.path)
                if served is None:
                    self.send_error(404, 'Not Found')
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'application/octet-stream')
                if served.content_length:
                    self.send_header('Content-Length', str(len(served.data)))
                self.end_headers()
                self.wfile.write(served.data[:served.stop_after])
                self.wfile.flush()

            def log_message(self, *args) -> None:
                pass  # keep the test output clean

        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def add(self, path: str, data: bytes, **options) -> str:
        """Serve ``data`` at ``path``.

        Args:
            path: The URL path, starting with ``/``.
            data: The bytes.
            **options: ``stop_after`` and ``content_length`` of
                :class:`ServedFile`.

        Returns:
            The URL.
        """
        self.files[path] = ServedFile(data, **options)
        return self.url(path)

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        host, port = self._httpd.server_address[:2]
        return f'http://{host}:{port}{path}'

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
