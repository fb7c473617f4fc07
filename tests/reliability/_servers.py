"""Local servers for fault injection: a tracking server that never answers, and an images server
that counts every TCP connection and can drop connections or stall before answering."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections import Counter
from typing import Any

from _openai_server import FakeImagesServer, _handler, _parse_multipart


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (a hung tracking server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)  # held open, never answered

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop = True
        self._thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class FaultyImagesServer(FakeImagesServer):
    """:class:`FakeImagesServer` that counts connections and can drop the next ``drop`` requests."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.connections = 0
        self.drop = 0
        self.stall_next = 0  # this many requests sleep stall_s before answering (a client timeout)
        self.stall_s = 0.0
        self.dropped = 0
        self.delivered: Counter = Counter()  # source sha256 -> successful responses fully sent (paid)
        self._local = threading.local()
        outer = self
        base = _handler(self)

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:  # noqa: N802
                with outer._lock:
                    drop = outer.drop > 0
                    if drop:
                        outer.drop -= 1
                        outer.dropped += 1
                if drop:  # read the request, then hang up without a response
                    self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                with outer._lock:
                    stall = outer.stall_next > 0
                    outer.stall_next -= stall
                if stall:
                    time.sleep(outer.stall_s)
                outer._local.last = None
                super().do_POST()
                self.wfile.flush()
                last = outer._local.last
                if last is not None and last[0] == 200:
                    with outer._lock:
                        outer.delivered[last[1]] += 1

        self._httpd.RequestHandlerClass = Handler
        verify = self._httpd.verify_request

        def counting(request: Any, client_address: Any) -> bool:
            with outer._lock:
                outer.connections += 1
            return verify(request, client_address)

        self._httpd.verify_request = counting  # type: ignore[method-assign]

    def respond(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], dict]:
        status, extra, payload = super().respond(path, headers, body)
        image = _parse_multipart(headers.get("Content-Type", ""), body)[1]
        self._local.last = (status, hashlib.sha256(image).hexdigest() if image else "")
        return status, extra, payload
