"""DeviceLink: the one object that owns a serial connection to a board (real ESP32, the virtual board
over a pty, or qemu over `socket://`) and speaks firmware/PROTOCOL.md on it.

Everything the board prints that is not a protocol line (ROM banner, ESP-IDF logs, half a line cut by
a reset) goes to `on_noise` and into device.log, never into the token stream.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.errors import Failure

from .protocol import Line, ProtocolError, chunk_crc, encode_line, parse_line


class DeviceError(Failure):
    """The board answered @ERR, or did not answer in time."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class TokenEvent:
    index: int
    token: int
    data: bytes  # the token's bytes as the firmware decoded them
    us: int  # board-measured µs for this token
    instructions: int  # retired instructions (rv32 under qemu); 0 elsewhere


@dataclass
class GenerationSummary:
    tokens: int
    us: int
    prompt_us: int
    reason: str

    @property
    def tok_per_s(self) -> float:
        return self.tokens / (self.us / 1e6) if self.us else 0.0


class DeviceLink:
    """`with DeviceLink("socket://localhost:4444") as link: link.info()`"""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 10.0,
                 on_noise: Callable[[bytes], None] | None = None,
                 log_path: Path | None = None) -> None:
        self.port_name = port
        self.baud = baud
        self.timeout = timeout
        self.on_noise = on_noise or (lambda raw: None)
        self.log_path = log_path
        self._log = None
        self._ids = itertools.count(1)
        self._buf = b""
        self.serial: Any = None
        self.corrupted_lines = 0

    # ---- connection --------------------------------------------------------------------------------

    def open(self) -> "DeviceLink":
        import serial

        try:
            self.serial = serial.serial_for_url(self.port_name, baudrate=self.baud, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as e:
            raise DeviceError(f"cannot open {self.port_name}: {e}. Is the board plugged in and "
                              "the port right? `tinylm doctor` lists serial ports; "
                              "`--port virtual` uses the virtual board") from e
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")
        return self

    def close(self) -> None:
        if self.serial is not None:
            self.serial.close()
            self.serial = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "DeviceLink":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- lines -------------------------------------------------------------------------------------

    def _record(self, direction: str, raw: bytes) -> None:
        if self._log is not None:
            self._log.write(f"{time.time():.6f} {direction} ".encode() + raw.rstrip(b"\n") + b"\n")
            self._log.flush()

    def send(self, type_: str, **fields: object) -> int:
        cmd_id = next(self._ids)
        line = encode_line(type_, id=cmd_id, **fields)
        self._record(">", line)
        self.serial.write(line)
        self.serial.flush()
        return cmd_id

    def read_line(self, deadline: float) -> Line | None:
        """Next protocol line, or None at the deadline. Noise and corrupted lines are skipped."""
        while True:
            nl = self._buf.find(b"\n")
            while nl < 0:
                if time.monotonic() > deadline:
                    return None
                # what is there, or the first byte to come: read(4096) would wait out the whole
                # port timeout (50 ms) for any reply shorter than 4 KB, on every command
                chunk = self.serial.read(min(4096, max(1, self.serial.in_waiting)))
                if chunk:
                    self._buf += chunk
                    nl = self._buf.find(b"\n")
            raw, self._buf = self._buf[:nl + 1], self._buf[nl + 1:]
            self._record("<", raw)
            # a reset can glue noise in front of a protocol line: look for '@' after the noise
            at = raw.find(b"@")
            if at > 0:
                self.on_noise(raw[:at])
                raw = raw[at:]
            try:
                line = parse_line(raw)
            except ProtocolError:
                self.corrupted_lines += 1
                self.on_noise(raw)
                continue
            if line is None:
                self.on_noise(raw)
                continue
            return line

    def wait_for(self, types: tuple[str, ...], cmd_id: int | None = None,
                 timeout: float | None = None) -> Line:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            line = self.read_line(deadline)
            if line is None:
                raise DeviceError(f"no {'/'.join(types)} from {self.port_name} within "
                                  f"{self.timeout if timeout is None else timeout:.0f} s; is the "
                                  "firmware running? (try RESET, or reflash)", code="timeout")
            if cmd_id is not None and line.fields.get("id") not in (str(cmd_id), None, "0") \
                    and line.type != "READY":
                continue  # a late reply to an earlier command
            if line.type == "ERR" and (cmd_id is None or line.fields.get("id") in (str(cmd_id), "0")):
                code = line.fields.get("code", "")
                raise DeviceError(f"board error {code}: {line.text()}", code=code)
            if line.type in types:
                return line

    # ---- commands ----------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 10.0) -> Line:
        return self.wait_for(("READY",), timeout=timeout)

    def info(self) -> dict[str, str]:
        cmd = self.send("INFO")
        return self.wait_for(("INFO",), cmd).fields

    def generate(self, prompt_ids: list[int] | None = None, text: str | None = None,
                 max_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 0.0, repetition_penalty: float = 1.0, seed: int = 0,
                 should_stop: Callable[[], bool] | None = None,
                 ) -> Iterator[TokenEvent | GenerationSummary]:
        """Yields a TokenEvent per token, then one GenerationSummary."""
        fields: dict[str, object] = {"max": max_tokens, "temp": _num(temperature), "topk": top_k,
                                     "topp": _num(top_p), "rep": _num(repetition_penalty),
                                     "seed": seed}
        if prompt_ids is not None:
            fields["ids"] = ",".join(str(i) for i in prompt_ids)
        else:
            fields["hex"] = (text or "").encode("utf-8").hex()
        cmd = self.send("GEN", **fields)
        stop_sent = False
        while True:
            if should_stop is not None and should_stop() and not stop_sent:
                self.send("STOP")
                stop_sent = True
            line = self.wait_for(("TOK", "END"), cmd)
            if line.type == "TOK":
                yield TokenEvent(line.int("i"), line.int("tok"), line.bytes(), line.int("us", 0),
                                 line.int("ir", 0))
            else:
                yield GenerationSummary(line.int("n"), line.int("us"), line.int("prompt_us", 0),
                                        line.fields.get("reason", ""))
                return

    def stop(self) -> None:
        cmd = self.send("STOP")
        self.wait_for(("OK",), cmd)

    def reset(self, timeout: float = 10.0) -> Line:
        cmd = self.send("RESET")
        self.wait_for(("OK",), cmd)
        return self.wait_ready(timeout)

    def upload(self, blob: bytes, on_progress: Callable[[int, int], None] | None = None,
               retries: int = 3) -> str:
        """Send a new model over serial in CRC-checked chunks; returns the sha256 the board
        confirmed. The board keeps its previous model unless the whole blob arrives intact."""
        sha = hashlib.sha256(blob).hexdigest()
        cmd = self.send("UPBEGIN", size=len(blob), sha=sha)
        chunk = int(self.wait_for(("OK",), cmd).fields.get("chunk", "192"))
        off = 0
        while off < len(blob):
            data = blob[off:off + chunk]
            for attempt in range(retries + 1):
                cmd = self.send("UPDATA", off=off, hex=data.hex(), crc=chunk_crc(data))
                try:
                    ok = self.wait_for(("OK",), cmd)
                    break
                except DeviceError as e:
                    if e.code not in ("chunk_crc", "crc", "timeout") or attempt == retries:
                        raise
            off = int(ok.fields.get("off", off + len(data)))
            if on_progress:
                on_progress(off, len(blob))
        cmd = self.send("UPEND")
        done = self.wait_for(("OK",), cmd, timeout=max(self.timeout, 30.0))
        return done.fields.get("sha", sha)


def _num(x: float) -> str:
    return f"{x:.6g}"
