"""A local stand-in for OpenAI's images API, for tests with the real ``openai`` client.

Speaks ``POST /v1/images/edits`` and ``POST /v1/images/variations`` (multipart upload, JSON with
base64 PNGs), counts every request, and can be scripted: queue error responses with
:meth:`FakeImagesServer.push` (429 with ``Retry-After``, 5xx, a content-policy 400), make it fail
hard after ``fail_after`` successful requests, or run a callback on a given request. Each
returned image is the uploaded one, inverted and resized to the requested size, so a test can
check that the generator resized it back and made it grayscale.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from PIL import Image, ImageOps

REFUSAL = (400, {}, {"error": {"message": "Your request was rejected by the safety system.",
                               "type": "image_generation_user_error", "param": None,
                               "code": "content_policy_violation"}})


def error(status: int, message: str = "scripted error", headers: dict[str, str] | None = None) -> tuple:
    return (status, headers or {}, {"error": {"message": message, "type": "server_error", "param": None, "code": None}})


@dataclass
class Seen:
    """One request as the server saw it."""

    path: str
    fields: dict[str, str]
    image_sha256: str
    authorization: str
    status: int
    at: float


@dataclass
class FakeImagesServer:
    """Start with ``with FakeImagesServer() as server:``; ``server.url`` is the ``base_url``."""

    script: deque = field(default_factory=deque)
    fail_after: int | None = None  # successes before every request answers 503
    on_request: dict[int, Callable[[], None]] = field(default_factory=dict)  # request number (1-based) -> callback
    delay_s: float = 0.0
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def push(self, *responses: tuple) -> None:
        """Queue responses ``(status, headers, json_body)`` for the next requests (then: success)."""
        self.script.extend(responses)

    @property
    def successes(self) -> list[Seen]:
        return [s for s in self.seen if s.status == 200]

    def success_count_by_source(self) -> Counter:
        return Counter(s.image_sha256 for s in self.successes)

    def __enter__(self) -> FakeImagesServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- one request --------------------------------------------------------------------------
    def respond(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], dict]:
        fields, image = _parse_multipart(headers.get("Content-Type", ""), body)
        with self._lock:
            number = len(self.seen) + 1
            if path not in ("/v1/images/edits", "/v1/images/variations"):
                status, extra, payload = error(404, f"no route {path}")
            elif self.script:
                status, extra, payload = self.script.popleft()
            elif self.fail_after is not None and len(self.successes) >= self.fail_after:
                status, extra, payload = error(503, "the server is down (scripted)")
            elif path.endswith("variations") and fields.get("response_format") != "b64_json":
                status, extra, payload = error(400, "this fake only returns b64_json")
            else:
                status, extra, payload = 200, {}, None
            digest = hashlib.sha256(image).hexdigest() if image else ""
            self.seen.append(Seen(path, fields, digest, headers.get("Authorization", ""), status, time.time()))
            callback = self.on_request.get(number)
        if callback is not None:
            callback()
        if self.delay_s:
            time.sleep(self.delay_s)
        if status == 200 and payload is None:  # a scripted 200 keeps its (possibly malformed) body
            payload = {"created": int(time.time()), "data": _variations(image, fields)}
        return status, extra, payload



def openai_plugin(server: FakeImagesServer, key: str | None, /, **options: Any) -> Any:
    """The installed ``openai`` generator plugin pointed at ``server`` (64 px, one request at a time);
    ``options`` override those, ``api_key`` included (``key`` is its default)."""
    from synthmed.plugins import get_plugin_manager, registry

    options = {"base_url": server.url, "api_key": key, "size": "64x64", "concurrency": 1, **options}
    return registry("generators", get_plugin_manager(autoload=True)).get("openai")(**options)

def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], bytes]:
    message = BytesParser(policy=email_policy).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    image = b""
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name in ("image", "image[]"):
            image = data
        else:
            fields[name] = data.decode()
    return fields, image


def _variations(image: bytes, fields: dict[str, str]) -> list[dict[str, str]]:
    size = fields.get("size", "256x256")
    w, h = (int(v) for v in size.split("x")) if "x" in size else (64, 64)
    with Image.open(io.BytesIO(image)) as src:
        out = ImageOps.invert(src.convert("RGB")).resize((w, h), Image.Resampling.NEAREST)
    data = []
    for _ in range(int(fields.get("n", "1"))):
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        data.append({"b64_json": base64.b64encode(buf.getvalue()).decode()})
    return data


def _handler(server: FakeImagesServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, extra, payload = server.respond(self.path, self.headers, body)
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    return Handler
