"""A fault-injecting TCP proxy on loopback, in threads of the test: put between the gateway and a
real server (the upstream stub, and the stores the scale-out work adds), it forwards bytes as they
come and misbehaves on command:

- ``inject("reset")``: accepts each new connection and resets it at once (RST), as a crashed
  server behind a live load balancer does;
- ``inject("blackhole")``: accepts and reads, never forwards nor answers, as a hung server does;
- ``inject(cut_after=N)``: forwards, but resets a connection once N bytes of response went back;
- ``heal()``: forwards everything again;
- ``reset_all()``: resets every open connection now, both ways, as a restart of the server does.

A fault applies to new connections, so ``inject`` first resets the open ones: a client's pooled
connections cannot slip past it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: linger on, timeout zero. The socket goes (and the RST
    with it) only once no thread is inside a call on it: shutting down its reading side first
    wakes a thread blocked in ``recv`` without sending anything."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    sock.close()


class _Connection:
    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server: socket.socket | None = None
        self.sent_back = 0
        self._closed = False
        self._ended = 0  # directions that ended cleanly
        self._lock = threading.Lock()

    def run(self) -> None:
        mode = self.proxy.mode
        if mode == "reset":
            self.reset()
            return
        if mode == "blackhole":
            with contextlib.suppress(OSError):
                while self.client.recv(65536):
                    pass
            self.reset()
            return
        try:
            self.server = socket.create_connection(("127.0.0.1", self.proxy.target_port))
        except OSError:
            self.reset()
            return
        threading.Thread(target=self._pump, args=(self.server, self.client, True), daemon=True).start()
        self._pump(self.client, self.server, False)

    def _pump(self, source: socket.socket, sink: socket.socket, response: bool) -> None:
        try:
            while chunk := source.recv(65536):
                cut_after = self.proxy.cut_after
                if response and cut_after is not None and self.sent_back + len(chunk) >= cut_after:
                    sink.sendall(chunk[: cut_after - self.sent_back])
                    break
                sink.sendall(chunk)
                if response:
                    self.sent_back += len(chunk)
            else:
                # A clean end on one side is passed on as a clean end (half-close).
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                with self._lock:
                    self._ended += 1
                    both = self._ended == 2
                if both:
                    self.close()
                return
        except OSError:
            pass
        self.reset()

    def reset(self) -> None:
        self._finish(rst=True)

    def close(self) -> None:
        self._finish(rst=False)

    def _finish(self, *, rst: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self.client, self.server):
            if sock is None:
                continue
            if rst:
                _reset(sock)
            else:
                sock.close()
        self.proxy._forget(self)


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.cut_after: int | None = None
        self.accepted = 0
        self._open: set[_Connection] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was shut down
                return
            connection = _Connection(self, client)
            with self._lock:
                self.accepted += 1
                self._open.add(connection)
            threading.Thread(target=connection.run, daemon=True).start()

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._open.discard(connection)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def inject(self, mode: str = "pass", *, cut_after: int | None = None) -> None:
        self.mode, self.cut_after = mode, cut_after
        self.reset_all()

    def heal(self) -> None:
        self.mode, self.cut_after = "pass", None

    def reset_all(self) -> None:
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            connection.reset()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        self.reset_all()
