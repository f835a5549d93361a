"""BatchedLines, the server's log output: whole lines, in order, and never a blocked loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pty
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from gateway.log_output import BatchedLines


class Pipe:
    """A real pipe: the log writes to ``out``; the test reads what came through."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        self.out = os.fdopen(write_fd, "wb")
        self.received = b""

    def fill(self, leave: int = 0) -> int:
        """Fill the pipe so that a write would wait, then free ``leave`` bytes; the bytes
        that stay in it."""
        os.set_blocking(self.out.fileno(), False)
        written = 0
        try:
            while True:
                written += os.write(self.out.fileno(), b"x" * 4096)
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self.out.fileno(), True)
        if leave:
            assert len(self.reader.read(leave)) == leave
        return written - leave

    def drain(self, skip: int = 0) -> None:
        """Read until every write end is closed; the first ``skip`` bytes are thrown away."""
        chunks = []
        while chunk := self.reader.read(65536):
            chunks.append(chunk)
        self.received = b"".join(chunks)[skip:]

    def close(self) -> None:
        for end in (self.reader, self.out):
            if not end.closed:
                end.close()


class LateReader:
    """A reader that stays away until the test lets it in: writes that return before then
    never waited for it. A loop that did block on the output would wait for the reader, which
    comes back on its own after ``alone_after_s`` so that the test ends and says so."""

    def __init__(self, read: Callable[[], object], alone_after_s: float = 10.0) -> None:
        self._let_in = threading.Event()
        self.came_back_alone = False
        self.thread = threading.Thread(target=self._read, args=(read, alone_after_s))
        self.thread.start()

    def _read(self, read: Callable[[], object], alone_after_s: float) -> None:
        self.came_back_alone = not self._let_in.wait(alone_after_s)
        read()

    def let_in(self) -> None:
        self._let_in.set()


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    made = Pipe()
    yield made
    made.close()


def numbers(data: bytes) -> list[int]:
    assert data.endswith(b"\n")
    return [orjson.loads(line)["n"] for line in data.splitlines()]


def line(n: int, pad: int = 0) -> bytes:
    return orjson.dumps({"n": n, "pad": "p" * pad})


def finish(output: BatchedLines, pipe: Pipe, reading: threading.Thread | None = None) -> None:
    """Everything written, every write end closed, and what came through read."""
    output.close()
    pipe.out.close()
    if reading is None:
        pipe.drain()
    else:
        reading.join(5)
        assert not reading.is_alive()


async def test_a_turns_lines_leave_together_in_whole_chunks_of_at_most_pipe_buf(pipe: Pipe):
    writes: list[int] = []
    real_write = os.write

    def counting(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "write", counting)
        output = BatchedLines(pipe.out)
        for n in range(40):  # one turn: about 13 KiB
            output.msg(line(n, 300))
        assert writes == []  # nothing before the turn ends
        await asyncio.sleep(0)
    assert len(writes) == 4
    assert all(size <= select.PIPE_BUF for size in writes)
    finish(output, pipe)
    assert numbers(pipe.received) == list(range(40))


async def test_a_full_pipe_never_blocks_the_loop_and_every_line_arrives_in_order(pipe: Pipe):
    """A reader that stopped reading: the loop keeps turning, the writer thread waits for
    the reader, and later turns queue behind it."""
    filler = pipe.fill()
    output = BatchedLines(pipe.out)
    reading = LateReader(lambda: pipe.drain(filler))
    for n in range(200):
        output.msg(line(n))
        if n % 10 == 9:
            await asyncio.sleep(0)
    assert not reading.came_back_alone, "the loop waited for the reader"
    reading.let_in()
    await asyncio.to_thread(finish, output, pipe, reading.thread)
    assert numbers(pipe.received) == list(range(200))


async def test_a_line_longer_than_the_room_left_in_the_pipe_never_blocks_the_loop(pipe: Pipe):
    """A page free, a 10 KB line (a traceback, say): the loop writes what fits, the writer
    the rest, once the reader is back."""
    filler = pipe.fill(leave=4096)
    output = BatchedLines(pipe.out)
    reading = LateReader(lambda: pipe.drain(filler))
    output.msg(line(0, 10_000))
    output.msg(line(1))
    await asyncio.sleep(0)
    assert not reading.came_back_alone, "the loop waited for the reader"
    reading.let_in()
    await asyncio.to_thread(finish, output, pipe, reading.thread)
    assert numbers(pipe.received) == [0, 1]


@pytest.mark.socket
async def test_a_terminal_that_takes_less_than_a_chunk_never_blocks_the_loop():
    """A terminal says it is writable when it takes a few bytes, not a whole chunk."""
    parent, child = pty.openpty()
    received: list[bytes] = []

    def read() -> None:
        while chunk := _read_some(parent):
            received.append(chunk)

    terminal = os.fdopen(child, "wb")
    output = BatchedLines(terminal)
    reading = LateReader(read)
    try:
        for n in range(400):  # far more than the terminal buffers
            output.msg(line(n, 200))
            if n % 20 == 19:
                await asyncio.sleep(0)
        assert not reading.came_back_alone, "the loop waited for the reader"
        reading.let_in()
        await asyncio.to_thread(output.close)
    finally:
        reading.let_in()
        terminal.close()
        reading.thread.join(5)
        os.close(parent)
    text = b"".join(received).replace(b"\r\n", b"\n")
    assert numbers(text) == list(range(400))


@pytest.mark.socket
async def test_a_socket_whose_reader_is_slow_never_blocks_the_loop():
    """systemd hands services a socket for stdout (the journal): the loop sends what fits."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    filled = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filled += ours.send(b"x" * 4096)
    ours.setblocking(True)
    received = [theirs.recv(8192)]  # some room: enough for poll to say "writable"
    stdout = os.fdopen(ours.detach(), "wb")
    output = BatchedLines(stdout)

    def read() -> None:
        while chunk := theirs.recv(65536):
            received.append(chunk)

    reading = LateReader(read)
    for n in range(300):
        output.msg(line(n, 100))
        if n % 10 == 9:
            await asyncio.sleep(0)
    assert not reading.came_back_alone, "the loop waited for the reader"
    reading.let_in()
    await asyncio.to_thread(output.close)
    stdout.close()
    await asyncio.to_thread(reading.thread.join, 5)
    theirs.close()
    assert numbers(b"".join(received)[filled:]) == list(range(300))


def _read_some(fd: int) -> bytes:
    ready, _, _ = select.select([fd], [], [], 0.5)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other end closed
        return b""


async def test_past_its_limit_the_loop_waits_for_the_writer_and_nothing_is_dropped(pipe: Pipe):
    """Bounded memory: with a limit of one byte, each turn waits until the reader has taken
    what was behind; every line still arrives."""
    filler = pipe.fill()
    output = BatchedLines(pipe.out, limit_bytes=1)
    reading = threading.Timer(0.2, pipe.drain, args=(filler,))
    reading.start()
    for n in range(50):
        output.msg(line(n))
        await asyncio.sleep(0)
    finish(output, pipe, reading)
    assert numbers(pipe.received) == list(range(50))


async def test_another_threads_line_waits_for_the_pipe_without_holding_up_the_loop(pipe: Pipe):
    """A line from a thread with no loop is written before its call returns; meanwhile the
    loop's lines keep their order, and the loop its pace."""
    filler = pipe.fill()
    output = BatchedLines(pipe.out)
    output.msg(line(0))
    await asyncio.sleep(0)  # the loop's first line waits for the writer
    other = threading.Thread(target=output.msg, args=(line(-1),))
    other.start()
    reading = LateReader(lambda: pipe.drain(filler))
    for n in range(1, 50):
        output.msg(line(n))
        await asyncio.sleep(0)
    assert not reading.came_back_alone, "the loop waited for the reader"
    reading.let_in()
    await asyncio.to_thread(other.join, 5)
    assert not other.is_alive()
    await asyncio.to_thread(finish, output, pipe, reading.thread)
    got = numbers(pipe.received)
    assert [n for n in got if n >= 0] == list(range(50))
    assert -1 in got


async def test_a_non_blocking_descriptor_that_fills_hands_the_rest_over(pipe: Pipe):
    """Someone set O_NONBLOCK on the shared stdout: the writer waits for it all the same."""
    filler = pipe.fill()
    os.set_blocking(pipe.out.fileno(), False)
    output = BatchedLines(pipe.out)
    output.msg(line(0, 10_000))  # longer than PIPE_BUF: written in parts
    output.msg(line(1))
    await asyncio.sleep(0)
    reading = threading.Thread(target=pipe.drain, args=(filler,))
    reading.start()
    await asyncio.to_thread(finish, output, pipe, reading)
    assert numbers(pipe.received) == [0, 1]


async def test_a_pipe_whose_reader_is_gone_drops_lines_without_raising(pipe: Pipe):
    pipe.reader.close()
    output = BatchedLines(pipe.out)
    failures: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: failures.append(context))
    for n in range(3):
        output.msg(line(n))
        await asyncio.sleep(0)
    await asyncio.to_thread(output.msg, line(3))  # no loop in that thread: written at once
    await asyncio.to_thread(output.close)
    assert failures == []


def test_a_line_of_a_loop_that_stopped_is_written_by_the_next_one(pipe: Pipe):
    """The last turn of a loop never ended: the next loop's turn takes its lines along."""
    output = BatchedLines(pipe.out)
    first = asyncio.new_event_loop()
    first.call_soon(lambda: (output.msg(line(0)), first.stop()))
    first.run_forever()
    first.close()

    async def second() -> None:
        output.msg(line(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(second())
    assert numbers(os.read(pipe.reader.fileno(), 65536)) == [0, 1]
    finish(output, pipe)


def test_without_a_loop_a_line_is_written_before_msg_returns(pipe: Pipe):
    output = BatchedLines(pipe.out)
    output.msg(b'{"n":1}')
    assert os.read(pipe.reader.fileno(), 100) == b'{"n":1}\n'
    finish(output, pipe)


async def test_a_regular_file_is_written_at_the_end_of_the_turn(tmp_path: Any):
    with (tmp_path / "log").open("wb") as file:
        output = BatchedLines(file)
        output.msg(line(0))
        output.msg(line(1))
        await asyncio.sleep(0)
        assert numbers((tmp_path / "log").read_bytes()) == [0, 1]
        output.close()


async def test_a_stream_without_a_descriptor_is_written_through_its_methods():
    stream = io.BytesIO()
    output = BatchedLines(stream)
    output.msg(b'{"n":1}')
    output.msg(b'{"n":2}')
    await asyncio.sleep(0)
    assert stream.getvalue() == b'{"n":1}\n{"n":2}\n'
