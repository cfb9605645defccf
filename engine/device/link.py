"""DeviceLink: firmware/PROTOCOL.md commands on a board (real ESP32, the virtual board over a pty, or
qemu over `socket://`): info, generate, stop, reset, upload.

It sits on a BoardSession — the port's one owner and one reader. `DeviceLink(port)` opens a session
of its own; `DeviceLink(session=s)` shares one, so the monitor, chat and uploads use one open port.
Everything the board prints that is not a protocol line (ROM banner, ESP-IDF logs, half a line cut by
a reset) goes to `on_noise` and into device.log, never into the token stream. A link reads its own
queue: give each thread that sends commands its own DeviceLink (on one session). Every wait has a
deadline; a port that vanishes mid-command is a PortGone within it, not a hang or a traceback.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from engine.errors import UserError

from .errors import DeviceError, NotATinyLMBoard, PortGone, ProtocolMismatch
from .protocol import (
    MAX_LINE,
    PROTO_VERSION,
    Line,
    LineTooLong,
    ProtocolError,
    chunk_crc,
    encode_line,
    parse_line,
)
from .session import BoardSession, Event, PortBack, PortLost, SerialLine

__all__ = ["DeviceError", "DeviceLink", "GenerationSummary", "TokenEvent"]

STOP_DEADLINE = 3.0  # seconds a STOP gets to end a generation (the board stops within a token)
# A generation that goes quiet this long (or 4x its slowest gap between lines, if longer), or that
# shows a cut line, makes the link ask the board @STATE: a lost @END then ends it at once.
STATE_QUIET = 1.0


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

    def __init__(self, port: str = "", baud: int = 115200, timeout: float = 10.0,
                 on_noise: Callable[[bytes], None] | None = None,
                 log_path: Path | None = None, *, session: BoardSession | None = None,
                 exclusive: bool = True) -> None:
        if not port and session is None:
            raise ValueError("DeviceLink needs a port or a session")
        self.port_name = port or session.port  # type: ignore[union-attr]
        self.baud = baud
        self.timeout = timeout
        self.on_noise = on_noise or (lambda raw: None)
        self._noise_wanted = on_noise is not None
        self.log_path = log_path
        self.exclusive = exclusive
        self.session = session
        self._own_session = session is None
        self._sub = None
        self.corrupted_lines = 0
        self._noise_lines = 0  # non-protocol lines since the last command (a wrong-baud hint)
        self._last_sent = b""
        self._sent_at = 0.0
        self._stop_request = threading.Event()
        self._gen_thread: int | None = None
        self._gen_done = threading.Event()
        self._gen_done.set()

    # ---- connection --------------------------------------------------------------------------

    def open(self) -> "DeviceLink":
        if self._own_session:
            self.session = BoardSession(self.port_name, self.baud, log_path=self.log_path,
                                        exclusive=self.exclusive)
        assert self.session is not None
        # subscribed before the port opens, so a READY right after opening is not missed
        self._sub = self.session.subscribe(maxsize=50_000, want=self._wants)
        if self._own_session:
            try:
                self.session.open()
            except BaseException:
                self._sub.close()
                raise
        return self

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._own_session and self.session is not None:
            self.session.close()

    def __enter__(self) -> "DeviceLink":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wants(self, ev: Event) -> bool:
        """On the reader thread: protocol candidates and port events (noise only if asked for),
        so a board printing thousands of log lines cannot crowd out a reply."""
        if isinstance(ev, SerialLine):
            return ev.direction == "<" and (self._noise_wanted or b"@" in ev.raw)
        return True

    # ---- lines -------------------------------------------------------------------------------

    def send(self, type_: str, **fields: object) -> int:
        assert self.session is not None, "DeviceLink is not open"
        cmd_id = self.session.next_id()
        line = encode_line(type_, id=cmd_id, **fields)
        self._last_sent = line.rstrip(b"\n")
        self._sent_at = time.time()
        self._noise_lines = 0
        self.session.write(line)
        return cmd_id

    def read_line(self, deadline: float, survive_loss: bool = False) -> Line | None:
        """Next protocol line, or None at the deadline (time.monotonic()). Noise and corrupted
        lines are skipped. A lost port raises PortGone (unless `survive_loss`: a reset that makes
        a USB board re-enumerate)."""
        assert self._sub is not None, "DeviceLink is not open"
        while True:
            ev = self._sub.get(timeout=max(0.0, deadline - time.monotonic()))
            if ev is None:
                return None
            if isinstance(ev, PortLost):
                if survive_loss or (ev.t < self._sent_at and self.session.connected):
                    continue  # lost (and back) before the command we wait for was sent
                raise PortGone(f"{self.port_name} went away: {ev.reason}. The board was unplugged, "
                               "reset or its process ended; the session re-opens the port when it "
                               "comes back", code="lost")
            if isinstance(ev, PortBack):
                continue
            line = self._parse(ev.raw)
            if line is not None:
                return line

    def _parse(self, raw: bytes) -> Line | None:
        if raw == self._last_sent:
            raise NotATinyLMBoard(
                f"{self.port_name} answered our own line back: it echoes what it gets (a loopback "
                "adapter, a terminal with echo on, or a board without the tinylm firmware). Not a "
                "tinylm board: flash the firmware (firmware/README.md) or pick another port")
        at = raw.find(b"@")  # a reset can glue noise in front of a protocol line
        if at < 0:
            self._noise_lines += 1
            self.on_noise(raw)
            return None
        if at > 0:
            self.on_noise(raw[:at])
            raw = raw[at:]
        try:
            line = parse_line(raw)
        except ProtocolError:
            self.corrupted_lines += 1
            self.on_noise(raw)
            return None
        return line

    def _match(self, line: Line, cmd_id: int | None) -> bool:
        """Is `line` about command `cmd_id`? Raises DeviceError for its @ERR."""
        lid = line.fields.get("id")
        if cmd_id is not None and lid not in (str(cmd_id), None, "0") and line.type != "READY":
            return False  # a late reply to an earlier command
        if line.type == "ERR" and (cmd_id is None or lid in (str(cmd_id), "0")):
            code = line.fields.get("code", "")
            raise DeviceError(f"board error {code}: {line.text()}", code=code)
        return True

    def _timeout_error(self, what: str, timeout: float) -> DeviceError:
        hint = "is the firmware running? (try a reset, or reflash)"
        if self._noise_lines:
            hint = (f"it printed {self._noise_lines} line(s) that are not protocol: a wrong baud rate "
                    f"(this is {self.baud}), or not the tinylm firmware?")
        return DeviceError(f"no {what} from {self.port_name} within {timeout:.0f} s; {hint}",
                           code="timeout")

    def wait_for(self, types: tuple[str, ...], cmd_id: int | None = None,
                 timeout: float | None = None, survive_loss: bool = False) -> Line:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(deadline, survive_loss)
            if line is None:
                raise self._timeout_error("/".join(types), timeout)
            if self._match(line, cmd_id) and line.type in types:
                return line

    # ---- commands ----------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 10.0) -> Line:
        ready = self.wait_for(("READY",), timeout=timeout, survive_loss=True)
        check_proto(self.port_name, ready.fields)
        return ready

    def info(self) -> dict[str, str]:
        cmd = self.send("INFO")
        fields = self.wait_for(("INFO",), cmd).fields
        check_proto(self.port_name, fields)
        return fields

    def generate(self, prompt_ids: list[int] | None = None, text: str | None = None,
                 max_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 0.0, repetition_penalty: float = 1.0, seed: int = 0,
                 should_stop: Callable[[], bool] | None = None,
                 ) -> Iterator[TokenEvent | GenerationSummary]:
        """Yields a TokenEvent per token, then one GenerationSummary. `should_stop()` (or `stop()`
        from another thread) ends it early: the summary then says reason "stop". A prompt too long
        for one line goes ahead in @PROMPT lines. Closing the iterator early stops the board too."""
        params: dict[str, object] = {"max": max_tokens, "temp": _num(temperature), "topk": top_k,
                                     "topp": _num(top_p), "rep": _num(repetition_penalty),
                                     "seed": seed}
        self._stop_request.clear()
        self._gen_done.clear()
        self._gen_thread = threading.get_ident()
        ended = False
        cmd = 0
        try:
            cmd = self._send_gen(params, prompt_ids, text)
            stop_sent = False
            deadline = time.monotonic() + self.timeout
            asker = _StateAsker(self)
            while True:
                if not stop_sent and (self._stop_request.is_set() or
                                      (should_stop is not None and should_stop())):
                    self.send("STOP")
                    stop_sent = True
                    deadline = time.monotonic() + STOP_DEADLINE
                line = self.read_line(min(deadline, time.monotonic() + 0.1))
                asker.tick(line)
                if line is None:
                    if time.monotonic() >= deadline:
                        raise self._timeout_error("token" if not stop_sent else "END after STOP",
                                                  self.timeout if not stop_sent else STOP_DEADLINE)
                    continue
                if asker.is_reply(line):
                    summary = asker.ended(line, cmd)
                    if summary is not None:  # the board is done: its END line was lost
                        ended = True
                        yield summary
                        return
                    continue
                if not self._match(line, cmd) or line.type not in ("TOK", "END"):
                    continue
                if line.type == "TOK":
                    deadline = time.monotonic() + self.timeout
                    yield TokenEvent(line.int("i"), line.int("tok"), line.bytes(), line.int("us", 0),
                                     line.int("ir", 0))
                else:
                    ended = True
                    yield GenerationSummary(line.int("n"), line.int("us"), line.int("prompt_us", 0),
                                            line.fields.get("reason", ""))
                    return
        except GeneratorExit:
            if cmd and not ended:
                self._abandon(cmd)
            raise
        finally:
            self._gen_thread = None
            self._gen_done.set()

    def _send_gen(self, params: dict[str, object], prompt_ids: list[int] | None,
                  text: str | None) -> int:
        if prompt_ids is None:
            hexed = (text or "").encode("utf-8").hex()
            try:
                return self.send("GEN", hex=hexed, **params)
            except LineTooLong as e:
                raise UserError(f"a text prompt of {len(hexed) // 2} bytes does not fit one protocol "
                                "line; tokenize it on the host and pass prompt_ids (sent in several "
                                "lines)") from e
        ids = [str(int(i)) for i in prompt_ids]
        try:
            return self.send("GEN", ids=",".join(ids), **params)
        except LineTooLong:
            pass  # split: PROMPT lines, then a GEN naming them with pre=
        off = 0
        while off < len(ids):
            room = MAX_LINE - len(encode_line("PROMPT", id=2**31, off=off, ids=""))
            n, used = 0, 0
            while off + n < len(ids) and used + len(ids[off + n]) + (1 if n else 0) <= room:
                used += len(ids[off + n]) + (1 if n else 0)
                n += 1
            cmd = self.send("PROMPT", off=off, ids=",".join(ids[off:off + n]))
            try:
                held = self.wait_for(("OK",), cmd).int("n")
            except DeviceError as e:
                if e.code == "unknown":
                    raise ProtocolMismatch(
                        f"the board on {self.port_name} does not know @PROMPT (firmware older than "
                        f"0.2.0): a prompt of {len(ids)} tokens needs more than one protocol line. "
                        "Reflash the firmware, or shorten the prompt") from e
                raise
            if held != off + n:
                raise DeviceError(f"board holds {held} prompt tokens after PROMPT off={off}, "
                                  f"expected {off + n}", code="offset")
            off += n
        return self.send("GEN", pre=len(ids), **params)

    def _abandon(self, cmd: int) -> None:
        """The caller stopped reading mid-generation: stop the board so the next command is not
        answered `busy`. Best effort within STOP_DEADLINE; a port already gone needs nothing."""
        try:
            self.send("STOP")
            deadline = time.monotonic() + STOP_DEADLINE
            while (line := self.read_line(deadline)) is not None:
                if line.type == "END" and line.fields.get("id") == str(cmd):
                    return
        except DeviceError:  # PortGone, NotATinyLMBoard: nothing left to stop
            return

    def stop(self, timeout: float | None = None) -> None:
        """Stop the running generation (from any thread), or send STOP to an idle board."""
        if self._gen_thread is not None:
            self._stop_request.set()
            if self._gen_thread != threading.get_ident():
                self._gen_done.wait(STOP_DEADLINE + 1.0 if timeout is None else timeout)
            return
        cmd = self.send("STOP")
        self.wait_for(("OK",), cmd, timeout)

    def reset(self, timeout: float = 10.0) -> Line:
        """Restart the board into its app (DTR/RTS where the port has them, else @RESET) and wait
        for its READY."""
        assert self.session is not None and self._sub is not None, "DeviceLink is not open"
        self._sub.get_batch(timeout=0)  # a READY still queued from an earlier boot is not this one
        self._sent_at = time.time()
        cmd = self.session.reset("app")
        if cmd:
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


class _StateAsker:
    """Decides when a generation asks the board @STATE (firmware/PROTOCOL.md): after a cut line, or
    after STATE_QUIET (or 4x the slowest gap between lines so far) without a line. One question at
    a time; an unanswered one is asked again after another quiet spell."""

    def __init__(self, link: DeviceLink) -> None:
        self.link = link
        self.asked = 0  # id of the STATE in flight
        self.asked_at = 0.0
        self.last_line = time.monotonic()
        self.slowest = 0.0
        self.corrupted = link.corrupted_lines

    def tick(self, line: Line | None) -> None:
        now = time.monotonic()
        if line is not None:
            self.slowest = max(self.slowest, now - self.last_line)
            self.last_line = now
        quiet = max(STATE_QUIET, 4 * self.slowest)
        cut = self.link.corrupted_lines > self.corrupted
        since = now - max(self.last_line, self.asked_at)
        if cut or since > quiet:
            self.corrupted = self.link.corrupted_lines
            self.asked = self.link.send("STATE")
            self.asked_at = now

    def is_reply(self, line: Line) -> bool:
        return line.type == "STATE" and bool(self.asked) and line.fields.get("id") == str(self.asked)

    def ended(self, line: Line, cmd: int) -> GenerationSummary | None:
        """The summary when STATE says generation `cmd` is over, None while it runs."""
        self.asked = 0
        if line.fields.get("busy") == "1" and line.fields.get("gen") == str(cmd):
            return None
        if line.fields.get("gen") != str(cmd):
            raise DeviceError(f"the board on {self.link.port_name} is not running generation {cmd} "
                              f"any more (it says busy={line.fields.get('busy')}, last generation "
                              f"{line.fields.get('gen')}): it was reset mid-generation? Run it again",
                              code="lost")
        return GenerationSummary(line.int("n"), line.int("us", 0), line.int("prompt_us", 0),
                                 line.fields.get("reason", ""))


def check_proto(port: str, fields: dict[str, str]) -> None:
    """A READY/INFO must come from the tinylm firmware speaking our protocol version."""
    if "proto" not in fields or "fw" not in fields:
        raise NotATinyLMBoard(f"{port} answered without the tinylm firmware's fields (fw, proto): "
                              "not a tinylm board; flash the firmware (firmware/README.md) or pick "
                              "another port")
    if fields["proto"] != str(PROTO_VERSION):
        raise ProtocolMismatch(f"the board on {port} speaks protocol version {fields['proto']} "
                               f"(firmware {fields['fw']}) but this tinylm speaks {PROTO_VERSION}: "
                               "reflash the board with this repository's firmware (firmware/README.md)"
                               " or use the tinylm that matches it")


def _num(x: float) -> str:
    return f"{x:.6g}"
