"""The tap's Singer writer: records leave in full buffers, a STATE flushes them all."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout

from singer_sdk.singerlib import RecordMessage, StateMessage

from tap_mailgun.sdk_compat import MessageWriter


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def test_records_wait_in_the_buffer_until_a_state_flushes_them() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_fd, "w"), 1 << 16))
    writer = MessageWriter()
    try:
        with redirect_stdout(stdout):
            writer.write_message(RecordMessage(stream="events", record={"id": "a"}))
            writer.write_message(RecordMessage(stream="events", record={"id": "b"}))
            assert _read_available(read_fd) == b"", "records are not flushed one by one"

            writer.write_message(StateMessage(value={"bookmarks": {}}))
            lines = _read_available(read_fd).decode().splitlines()
        assert [json.loads(line)["type"] for line in lines] == ["RECORD", "RECORD", "STATE"]
    finally:
        stdout.close()
        os.close(read_fd)
