"""The server's log output: JSON lines to stdout, written so that the event loop never waits
for the reader and workers sharing a pipe never cut into each other's lines."""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import functools
import io
import os
import select
import socket
import stat
import threading
from collections.abc import Callable
from typing import BinaryIO


class BatchedLines:
    """The log's output for a server. The lines of one turn of the event loop leave together at
    the end of the turn, not one write and flush per line; with no loop running (start, stop,
    another thread) a line is written before ``msg`` returns.

    A write never blocks the loop. A pipe whose reader is slow (a log shipper, a paused
    terminal) fills, and a write to a full pipe waits: the loop writes through a non-blocking
    descriptor of its own to the same pipe or terminal, and what it cannot take goes to a
    writer thread that waits for the reader instead; the lines of later turns follow it there,
    in order, until it has caught up. (A socket, systemd's journal, is sent to with
    ``MSG_DONTWAIT``; a regular file never waits for a reader and is written directly.) What
    waits for the
    writer is bounded (``limit_bytes``): past that the loop waits too, so a stuck reader slows
    the gateway down instead of filling its memory, and no line is dropped. Once stdout is
    gone (its reader exited), lines are dropped: there is nowhere else to write them.

    Workers share one stdout pipe, and a pipe keeps a write whole only up to PIPE_BUF bytes:
    lines go out in chunks of whole lines within that, each in one ``write``, so no line
    shorter than that is ever cut by another process's."""

    def __init__(self, stream: BinaryIO, limit_bytes: int = 32 * 1024 * 1024) -> None:
        self._stream = stream
        self._fd: int | None = None  # the stream's own, blocking: the writer thread's
        with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = stream.fileno()
        self._write_soon, self._close_loop_side, self._ready = _loop_side(self._fd)
        self._limit = limit_bytes
        self._turn: list[bytes] = []  # this turn's lines
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._behind: collections.deque[bytes] = collections.deque()  # chunks for the writer
        self._behind_bytes = 0
        self._queued = self._done = 0  # chunks handed to the writer, and of them written
        self._turn_lock = threading.Lock()  # the turn's lines: taken once a line, kept cheap
        self._changed = threading.Condition()  # the writer's queue and counts
        self._writer: threading.Thread | None = None
        atexit.register(self.close)

    def msg(self, message: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._turn_lock:
            self._turn.append(message)
            if loop is not None:
                if self._scheduled_on is not loop:  # not yet, or by a loop since closed
                    self._scheduled_on = loop
                    loop.call_soon(self._end_of_turn)
                return
        self.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg

    def flush(self) -> None:
        """Every line so far written (or dropped, if stdout is gone) before returning. Never
        writes while holding the lock, so the loop is not kept waiting by a full pipe."""
        chunks = _chunks(self._take_turn())
        with self._changed:
            if threading.current_thread() is self._writer:  # its stream logged: no waiting
                mine = chunks
            else:
                if chunks:
                    self._hand_over(chunks)
                until = self._queued  # these, not an empty queue: the loop may add more
                while self._done < until and self._writer_alive():
                    self._changed.wait(0.1)  # rechecked: a writer that died notifies no one
                mine = []
                if self._done < until:  # no writer could run (interpreter shutdown): here
                    mine = list(self._behind)
                    self._behind.clear()
                    self._behind_bytes, self._done = 0, self._queued
        for chunk in mine:
            try:
                self._write_waiting(chunk)
            except OSError:
                return  # stdout is gone

    def close(self) -> None:
        """Flush, and close the loop's own descriptor (it keeps the pipe open)."""
        self.flush()
        if self._close_loop_side is not None:
            self._close_loop_side()
            self._write_soon = self._close_loop_side = None

    def _take_turn(self) -> list[bytes]:
        with self._turn_lock:
            self._scheduled_on = None
            lines, self._turn = self._turn, []
        return lines

    def _end_of_turn(self) -> None:
        chunks = _chunks(self._take_turn())
        with self._changed:
            behind = self._done < self._queued
        if not behind:
            chunks = self._write_now(chunks)
        if chunks:
            with self._changed:
                self._hand_over(chunks)
                while self._behind_bytes > self._limit and self._writer_alive():
                    self._changed.wait(0.1)

    def _write_now(self, chunks: list[bytes]) -> list[bytes]:
        """On the loop: write what can be written without waiting, return the rest."""
        for i, chunk in enumerate(chunks):
            try:
                if self._write_soon is not None:
                    written = self._write_soon(chunk)
                    if written < len(chunk):
                        return [chunk[written:], *chunks[i + 1 :]]
                elif self._ready is not None and not self._ready.poll(0):
                    return chunks[i:]
                else:
                    self._write_waiting(chunk)
            except BlockingIOError:
                return chunks[i:]  # nothing of it was written: a pipe takes a chunk whole
            except OSError:
                return []  # stdout is gone: nowhere to write, and nothing to wait for
        return []

    def _hand_over(self, chunks: list[bytes]) -> None:
        """Under the lock: the writer thread takes these, after what it already has."""
        self._behind.extend(chunks)
        self._queued += len(chunks)
        self._behind_bytes += sum(map(len, chunks))
        if not self._writer_alive():
            self._writer = threading.Thread(target=self._write_behind, name="log", daemon=True)
            try:
                self._writer.start()
            except RuntimeError:  # the interpreter is shutting down: flush() writes them
                self._writer = None
        self._changed.notify_all()

    def _writer_alive(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    def _write_behind(self) -> None:
        while True:
            with self._changed:
                while not self._behind:
                    self._changed.wait()
                chunk = self._behind.popleft()
            try:
                self._write_waiting(chunk)
            except Exception:  # noqa: S110 - stdout is gone (its reader exited, say):
                pass  # there is nowhere else to tell, and the writer must live on
            finally:
                with self._changed:
                    self._done += 1
                    self._behind_bytes -= len(chunk)
                    self._changed.notify_all()

    def _write_waiting(self, chunk: bytes) -> None:
        """All of ``chunk``, waiting for the reader as long as it takes (a descriptor someone
        made non-blocking included)."""
        if self._fd is None:
            self._stream.write(chunk)
            self._stream.flush()
            return
        view = memoryview(chunk)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                waiting = select.poll()
                waiting.register(self._fd, select.POLLOUT)
                waiting.poll(1000)


def _loop_side(
    fd: int | None,
) -> tuple[Callable[[bytes], int] | None, Callable[[], None] | None, select.poll | None]:
    """How the loop writes to stdout without waiting: a write that takes what fits now and
    never waits (with what closes it), or a ``poll`` to ask first. A pipe or a terminal gets a
    non-blocking descriptor of its own (other processes sharing stdout keep theirs blocking),
    a socket (systemd's journal) ``MSG_DONTWAIT``, and a regular file, which never waits for a
    reader, neither."""
    if fd is None:
        return None, None, None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None, None, None
    if stat.S_ISREG(mode):
        return None, None, None
    with contextlib.suppress(OSError):  # no /proc (not Linux): poll instead
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            own = os.open(f"/proc/self/fd/{fd}", flags)
            return functools.partial(os.write, own), functools.partial(os.close, own), None
        if stat.S_ISSOCK(mode):
            sock = socket.socket(fileno=os.dup(fd))

            def send(chunk: bytes) -> int:
                return sock.send(chunk, socket.MSG_DONTWAIT)

            return send, sock.close, None
    ready = select.poll()
    ready.register(fd, select.POLLOUT)
    return None, None, ready


def _chunks(lines: list[bytes]) -> list[bytes]:
    """Lines, each ended by a newline, joined into chunks of at most PIPE_BUF bytes (a longer
    line is a chunk of its own)."""
    if not lines:
        return []
    if sum(map(len, lines)) + len(lines) <= select.PIPE_BUF:  # the usual turn: one chunk
        return [b"\n".join(lines) + b"\n"]
    chunks: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        data = line + b"\n"
        if chunk and size + len(data) > select.PIPE_BUF:
            chunks.append(b"".join(chunk))
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        chunks.append(b"".join(chunk))
    return chunks
