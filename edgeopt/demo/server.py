"""The demo's web page: a small ASGI app served by uvicorn on localhost.

Why not Gradio: the page must cost almost nothing next to a 1-2 ms model, and say what it costs. Gradio
brings ~100 MB of dependencies (FastAPI, pandas, a front-end bundle) and runs each UI update as a Python
event through its queue; a plain ASGI app with one Server-Sent Events stream and a static page that draws
its own charts on <canvas> keeps the server's work to one JSON snapshot per update, needs only uvicorn
(pure Python, ~1 MB with h11 and click), and loads nothing from the network.

The server runs in its own thread of the main process; models run in other processes (`engine`), so the
page cannot slow them except through the CPU it takes, which is measured (the server thread's CPU time
per second) and shown, together with the time the browser reports spending on each redraw.

Routes: ``/`` the page, ``/app.js``, ``/style.css``, ``/api/info`` (static facts), ``/api/state`` (one
snapshot), ``/events`` (snapshots as Server-Sent Events, `UPDATES_PER_SECOND`), ``POST /api/busy``
(``{"on": true}``: the busy-core switch), ``POST /api/render`` (the browser's own redraw cost).
"""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from pathlib import Path

import numpy as np

PAGE_DIR = Path(__file__).resolve().parent / "page"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
UPDATES_PER_SECOND = 10
WAVEFORM_POINTS = 400
# the normalised log-mel range mapped onto the spectrogram's colour scale
SPECTROGRAM_RANGE = (-2.0, 3.0)


class DemoApp:
    """The ASGI application. `engine` gives the statistics, the current window and the busy switch."""

    def __init__(self, engine, info: dict):
        self.engine = engine
        self.info = info
        self.closing = False
        self._cpu_mark: tuple[float, float, float] | None = None
        self._static = {path: ((PAGE_DIR / name).read_bytes(), kind) for path, (name, kind) in STATIC.items()}

    # ------------------------------------------------------------------ what the page receives
    def display(self, window: np.ndarray | None) -> dict:
        """The current window as the page draws it: spectrogram (uint8, base64) and waveform envelope."""
        from edgeopt.training.tasks import RAVDESS_FEATURES

        out = {}
        if window is not None:
            lo, hi = SPECTROGRAM_RANGE
            img = np.clip((window - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
            out["spectrogram"] = {"rows": int(img.shape[0]), "cols": int(img.shape[1]),
                                  "data": base64.b64encode(img[::-1].tobytes()).decode()}  # low frequencies at the bottom
        c = RAVDESS_FEATURES.logmel
        audio = self.engine.ring.recent_audio(c.num_samples(RAVDESS_FEATURES.frames))
        if audio.size >= WAVEFORM_POINTS:
            bins = audio[: audio.size // WAVEFORM_POINTS * WAVEFORM_POINTS].reshape(WAVEFORM_POINTS, -1)
            out["waveform"] = {"min": np.round(bins.min(1), 4).tolist(), "max": np.round(bins.max(1), 4).tolist()}
        return out

    def snapshot(self) -> bytes:
        self._account_cpu()
        current = self.engine.current()
        state = self.engine.stats.live(playing=None if current is None else current[1])  # one ring read for both
        state.update(self.display(None if current is None else current[0]))
        return json.dumps(state, allow_nan=False, default=_jsonable).encode()

    def _account_cpu(self) -> None:
        """CPU shares of this (the server's) thread and of the statistics thread, over a second or more."""
        now, server_cpu, stats_cpu = time.perf_counter(), time.thread_time(), self.engine.collector_cpu
        if self._cpu_mark is None:
            self._cpu_mark = (now, server_cpu, stats_cpu)
            return
        t0, server0, stats0 = self._cpu_mark
        if now - t0 >= 1.0:
            self.engine.stats.set_page_cost(server_cpu_percent=100 * (server_cpu - server0) / (now - t0),
                                            stats_cpu_percent=100 * (stats_cpu - stats0) / (now - t0))
            self._cpu_mark = (now, server_cpu, stats_cpu)

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in self._static:
            body, kind = self._static[path]
            return await _respond(send, 200, body, kind)
        if method == "GET" and path == "/favicon.ico":
            return await _respond(send, 204, b"", "image/x-icon")
        if method == "GET" and path == "/api/info":
            return await _respond(send, 200, json.dumps(self.info, default=_jsonable).encode(), "application/json")
        if method == "GET" and path == "/api/state":
            return await _respond(send, 200, self.snapshot(), "application/json")
        if method == "GET" and path == "/events":
            return await self._events(receive, send)
        if method == "POST" and path in ("/api/busy", "/api/render"):
            try:
                body = json.loads(await _read_body(receive) or b"{}")
            except ValueError:
                return await _respond(send, 400, b'{"error": "expected a JSON body"}', "application/json")
            if path == "/api/busy":
                if not isinstance(body.get("on"), bool):
                    return await _respond(send, 400, b'{"error": "expected {\\"on\\": true|false}"}', "application/json")
                await asyncio.get_running_loop().run_in_executor(None, self.engine.set_busy, body["on"])
                return await _respond(send, 200, json.dumps({"busy": self.engine.busy.on}).encode(), "application/json")
            figures = {k: float(body[k]) for k in ("render_ms", "render_cpu_percent") if isinstance(body.get(k), (int, float))}
            self.engine.stats.set_page_cost(**{f"browser_{k}": v for k, v in figures.items()})
            return await _respond(send, 204, b"", "text/plain")
        return await _respond(send, 404, b"not found", "text/plain")

    async def _events(self, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        gone = asyncio.Event()

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            while not gone.is_set() and not self.closing:
                await send({"type": "http.response.body", "body": b"data: " + self.snapshot() + b"\n\n",
                            "more_body": True})
                try:
                    await asyncio.wait_for(gone.wait(), 1 / UPDATES_PER_SECOND)
                except asyncio.TimeoutError:
                    pass
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"event: end\ndata: {}\n\n", "more_body": False})
        except OSError:  # the browser went away mid-send
            pass
        finally:
            watcher.cancel()


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send, status: int, body: bytes, kind: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


class PageServer:
    """uvicorn in a background thread; `url` once started."""

    def __init__(self, app: DemoApp, host: str = "127.0.0.1", port: int = 8765):
        try:
            import uvicorn
        except ImportError as exc:  # pragma: no cover - uvicorn is a dependency
            raise RuntimeError("the demo page needs uvicorn: pip install uvicorn") from exc
        self.app = app
        self.host = host
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="edgeopt-demo-page", daemon=True)

    def start(self, timeout: float = 20.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the page server did not start on {self.host} (is the port in use?)")
            if time.monotonic() > deadline:
                raise RuntimeError("the page server did not start in time")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}/"

    def stop(self) -> None:
        self.app.closing = True
        self.server.should_exit = True
        self.thread.join(5)
