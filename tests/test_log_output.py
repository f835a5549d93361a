"""BatchedLines, the server's log output: whole lines, in order, and never a blocked loop."""

from __future__ import annotations

import asyncio
import io
import os
import select
import threading
import time
from collections.abc import Iterator

import orjson
import pytest

from gateway.logging import BatchedLines


class Pipe:
    """A real pipe: the log writes to ``out``; the test reads what came through."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        self.out = os.fdopen(write_fd, "wb")
        self.received = b""

    def fill(self) -> int:
        """Fill the pipe to the brim, so that the next write would wait; bytes written."""
        os.set_blocking(self.out.fileno(), False)
        written = 0
        try:
            while True:
                written += os.write(self.out.fileno(), b"x" * 4096)
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self.out.fileno(), True)
        return written

    def drain(self, skip: int = 0) -> None:
        """Read until the write end is closed; the first ``skip`` bytes are thrown away."""
        chunks = []
        while chunk := self.reader.read(65536):
            chunks.append(chunk)
        self.received = b"".join(chunks)[skip:]

    def close(self) -> None:
        for end in (self.reader, self.out):
            if not end.closed:
                end.close()


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    made = Pipe()
    yield made
    made.close()


def lines_of(data: bytes) -> list[dict[str, int]]:
    assert data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


async def test_a_turns_lines_leave_together_in_whole_chunks_of_at_most_pipe_buf(pipe: Pipe):
    writes: list[int] = []
    real_write = os.write

    def counting(fd: int, data: bytes | memoryview) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    output = BatchedLines(pipe.out)
    line = orjson.dumps({"n": 0, "pad": "p" * 300})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "write", counting)
        for n in range(40):  # one turn: about 13 KiB
            output.msg(line.replace(b'"n":0', b'"n":%d' % n))
        assert writes == []  # nothing before the turn ends
        await asyncio.sleep(0)
    assert len(writes) == 4
    assert all(size <= select.PIPE_BUF for size in writes)
    output.flush()
    pipe.out.close()
    pipe.drain()
    assert [x["n"] for x in lines_of(pipe.received)] == list(range(40))


async def test_a_full_pipe_never_blocks_the_loop_and_every_line_arrives_in_order(pipe: Pipe):
    """A reader that stopped reading: the loop keeps turning, the writer thread waits for
    the reader, and later turns queue behind it."""
    filler = pipe.fill()
    output = BatchedLines(pipe.out)
    # The reader comes back after a second: a loop blocked on the pipe would wait for it.
    reading = threading.Timer(1.0, pipe.drain, args=(filler,))
    reading.start()
    started = time.monotonic()
    for n in range(200):
        output.msg(orjson.dumps({"n": n}))
        if n % 10 == 9:
            await asyncio.sleep(0)
    assert time.monotonic() - started < 0.5
    await asyncio.to_thread(output.flush)
    pipe.out.close()
    reading.join(5)
    assert [x["n"] for x in lines_of(pipe.received)] == list(range(200))


async def test_past_its_limit_the_loop_waits_for_the_writer_and_nothing_is_dropped(pipe: Pipe):
    """Bounded memory: with a limit of one byte, each turn waits until the reader has taken
    what was behind; every line still arrives."""
    filler = pipe.fill()
    output = BatchedLines(pipe.out, limit_bytes=1)
    reading = threading.Timer(0.2, pipe.drain, args=(filler,))
    reading.start()
    for n in range(50):
        output.msg(orjson.dumps({"n": n}))
        await asyncio.sleep(0)
    output.flush()
    pipe.out.close()
    reading.join(5)
    assert [x["n"] for x in lines_of(pipe.received)] == list(range(50))


async def test_a_non_blocking_descriptor_that_fills_hands_the_rest_over(pipe: Pipe):
    """Someone set O_NONBLOCK on the shared stdout: a write it refuses halfway is finished by
    the writer, from the byte where it stopped."""
    filler = pipe.fill()
    os.set_blocking(pipe.out.fileno(), False)
    output = BatchedLines(pipe.out)
    big = orjson.dumps({"n": 0, "pad": "p" * 10_000})  # longer than PIPE_BUF: written in parts
    output.msg(big)
    output.msg(orjson.dumps({"n": 1}))
    await asyncio.sleep(0)
    reading = threading.Thread(target=pipe.drain, args=(filler,))
    reading.start()
    await asyncio.to_thread(output.flush)
    pipe.out.close()
    reading.join(5)
    assert [x["n"] for x in lines_of(pipe.received)] == [0, 1]


def test_without_a_loop_a_line_is_written_before_msg_returns(pipe: Pipe):
    output = BatchedLines(pipe.out)
    output.msg(b'{"n":1}')
    pipe.out.close()
    pipe.drain()
    assert pipe.received == b'{"n":1}\n'


async def test_a_stream_without_a_descriptor_is_written_through_its_methods():
    stream = io.BytesIO()
    output = BatchedLines(stream)
    output.msg(b'{"n":1}')
    output.msg(b'{"n":2}')
    await asyncio.sleep(0)
    assert stream.getvalue() == b'{"n":1}\n{"n":2}\n'
