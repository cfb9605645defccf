"""engine/device/session.py + link.py against the real firmware over a real pty: one reader delivering
every line to every subscriber, commands sharing the port, long prompts split over @PROMPT lines,
cancellation, a board that vanishes and comes back, resets as esptool does them — and the device-side
failures of issue 13, each ending in a clear message and exit code (never a hang or a traceback)."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty

import pytest
from protocol_util import StdioBoard

from engine.blob.reference import Reference
from engine.device.errors import PortBusy, PortGone, PortNotFound
from engine.device.link import DeviceLink, GenerationSummary, TokenEvent
from engine.device.protocol import encode_line, parse_line
from engine.device.session import BoardSession, PortBack, PortLost, SerialLine
from engine.device.virtual import VirtualBoard
from engine.infer.sample import SamplingParams
from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def blob(make_blob):
    """A random byte-vocab transformer with a 200-token context (room for long prompts)."""
    return make_blob("transformer", "int8", seed=5, seq_len=200)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with experiment `b` on the byte tokenizer (vocab 256, as the blob)."""
    ws = tmp_path_factory.mktemp("ws")
    r = run_cli(ws, "new", "b", "--set", "tokenizer.kind=byte", "--set", "tokenizer.vocab_size=256")
    assert r.returncode == 0, r.stderr
    return ws


def greedy(path, ids, n):
    """The reference's greedy ids as the board sends them (a final stop token is not sent)."""
    ref = Reference(path)
    toks = list(ref.generate(ids, SamplingParams(temperature=0.0), n))
    stops = {ref.vocab.bos_id, ref.vocab.eos_id} - {None}
    return toks[:-1] if toks and toks[-1] in stops else toks


def tokens(events):
    assert isinstance(events[-1], GenerationSummary)
    return [e.token for e in events if isinstance(e, TokenEvent)]


def drain(sub, until, timeout=10.0):
    """Events of `sub` until `until(events)` holds (or the timeout: then the test fails)."""
    got, end = [], time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < end, f"timed out; last events {got[-5:]}"
        got += sub.get_batch(timeout=0.2)
    return got


# ---- the session -------------------------------------------------------------------------------

def test_every_line_reaches_every_subscriber_and_a_full_queue_only_drops_its_own(board, blob, tmp_path):
    n = 20_000
    log = tmp_path / "device.log"
    with VirtualBoard(blob, flood=n) as vb, BoardSession(vb.port, log_path=log) as s:
        everything = s.subscribe(maxsize=100_000)
        stuck = s.subscribe(maxsize=10)  # never read
        seqs = [ev.raw for ev in drain(everything, lambda g: sum(b"seq:" in e.raw for e in g) >= n)
                if ev.raw.startswith(b"seq:")]
        assert [int(r.split()[0][4:]) for r in seqs] == list(range(n))
        assert everything.dropped == 0 and stuck.dropped >= n - 10 and stuck.pending() == 10
    text = log.read_bytes()
    assert text.count(b" < seq:") == n and b" < @READY " in text


def test_a_link_shares_the_port_with_a_flooding_board_and_a_monitor(board, blob):
    """Commands on the session while the board prints 5,000 lines/s of noise: the tokens are the
    reference's, and the other subscriber sees the protocol lines and the flood interleaved."""
    ids = [72, 101, 108, 108, 111]
    with VirtualBoard(blob, flood=4000, flood_rate=5000) as vb, BoardSession(vb.port) as s:
        watcher = s.subscribe(maxsize=100_000)
        with DeviceLink(session=s) as link:
            assert link.info()["vocab"] == "256"
            got = tokens(list(link.generate(prompt_ids=ids, max_tokens=20)))
        assert got == greedy(blob, ids, 20)
        seen = drain(watcher, lambda g: any(e.raw.startswith(b"@END") for e in g))
        kinds = [("tok" if e.raw.startswith(b"@TOK") else "seq" if e.raw.startswith(b"seq:") else "")
                 for e in seen if isinstance(e, SerialLine) and e.direction == "<"]
        first, last = kinds.index("tok"), len(kinds) - 1 - kinds[::-1].index("tok")
        assert "seq" in kinds[first:last]  # noise between the tokens, not all before or after
        assert any(e.direction == ">" and e.raw.startswith(b"@GEN") for e in seen
                   if isinstance(e, SerialLine))


def test_long_prompt_goes_in_prompt_lines(board, blob):
    ids = [(37 * i) % 200 + 50 for i in range(150)]  # 150 three-digit ids: a 620-byte GEN line
    with pytest.raises(ValueError):
        encode_line("GEN", id=1, ids=",".join(map(str, ids)), max=8)
    with VirtualBoard(blob) as vb, BoardSession(vb.port) as s:
        sent = s.subscribe(want=lambda e: isinstance(e, SerialLine) and e.direction == ">")
        with DeviceLink(session=s) as link:
            got = tokens(list(link.generate(prompt_ids=ids, max_tokens=8)))
        lines = [parse_line(e.raw) for e in sent.get_batch(timeout=0)]
    assert got == greedy(blob, ids, 8)
    assert [m.type for m in lines] == ["PROMPT", "PROMPT", "GEN"]
    assert lines[-1]["pre"] == "150" and "ids" not in lines[-1].fields


def test_prompt_command_on_the_board(board, blob):
    """PROTOCOL.md @PROMPT: offsets, a resent chunk, GEN's pre= check, what clears the held ids."""
    with StdioBoard("--blob", str(blob)) as b:
        link = b.link
        assert link.msg().type == "READY"
        assert link.call("PROMPT", off=0, ids="72,101").int("n") == 2
        assert link.call("PROMPT", off=2, ids="108,108").int("n") == 4
        assert link.call("PROMPT", off=2, ids="108,108").int("n") == 4  # resent: same place
        assert link.call("PROMPT", off=9, ids="1")["code"] == "offset"
        toks, end = link.generate(pre=4, ids=[111], max=6)
        assert toks == greedy(blob, [72, 101, 108, 108, 111], 6) and end["reason"] == "max"
        # GEN used them up: pre=4 again is refused, and so is hex after PROMPT
        assert link.call("GEN", pre=4, max=2)["code"] == "bad_arg"
        assert link.call("PROMPT", off=0, ids="72").int("n") == 1
        assert link.call("GEN", pre=1, hex="41", max=2)["code"] == "bad_arg"
        assert link.call("PROMPT", off=0, ids="72,999")["code"] == "bad_arg"  # not < vocab


def test_stop_and_an_abandoned_generation_leave_the_board_ready(board, blob):
    with VirtualBoard(blob, us_per_token=20000) as vb, DeviceLink(vb.port) as link:
        n = 0
        gen = link.generate(prompt_ids=[72], max_tokens=150, should_stop=lambda: n >= 3)
        t0 = time.monotonic()
        for events in gen:
            n += isinstance(events, TokenEvent)
        assert isinstance(events, GenerationSummary) and events.reason == "stop" and 3 <= n < 10
        assert time.monotonic() - t0 < 2.0
        # stop() from another thread
        threading.Timer(0.15, link.stop).start()
        last = list(link.generate(prompt_ids=[72], max_tokens=150))[-1]
        assert last.reason == "stop" and last.tokens < 30
        # the caller walks away mid-generation: the board is stopped, the next command works
        gen = link.generate(prompt_ids=[72], max_tokens=150)
        next(gen)
        gen.close()
        assert link.info()["vocab"] == "256"
        assert tokens(list(link.generate(prompt_ids=[72], max_tokens=3))) == greedy(blob, [72], 3)


def test_garbage_and_a_boot_banner_mid_generation_are_tolerated(board, blob):
    """--chaos 5: after every 5th token the board prints bytes that are not UTF-8 (glued to the next
    TOK line), half a protocol line, an END with a bad CRC and a whole boot banner."""
    ids = [72, 101, 108]
    noise: list[bytes] = []
    with VirtualBoard(blob, chaos=5) as vb, DeviceLink(vb.port, on_noise=noise.append) as link:
        got = tokens(list(link.generate(prompt_ids=ids, max_tokens=40)))
        assert got == greedy(blob, ids, 40)
        assert link.corrupted_lines >= 7  # the cut TOK and the bad-CRC END of each burst
        assert any(b"ets Jun" in n for n in noise) and any(b"\xe0\x1c" in n for n in noise)


def test_port_vanishing_mid_generation_then_coming_back(board, blob, tmp_path):
    """The board process dies mid-generation: PortGone well within the deadline, PortLost to
    subscribers; a new board behind the same link path is picked up by the session (PortBack)."""
    path = tmp_path / "board-link"
    vb = VirtualBoard(blob, us_per_token=20000, link=path).start()
    try:
        with BoardSession(str(path), backoff=(0.05, 0.3)) as s, DeviceLink(session=s, timeout=10) as link:
            events = s.subscribe(want=lambda e: not isinstance(e, SerialLine))
            gen = link.generate(prompt_ids=[72], max_tokens=500)
            next(gen), next(gen)
            vb.proc.kill()
            t0 = time.monotonic()
            with pytest.raises(PortGone, match="went away"):
                list(gen)
            assert time.monotonic() - t0 < 2.0
            assert isinstance(events.get(timeout=2), PortLost) and not s.connected
            vb.stop()
            vb = VirtualBoard(blob, link=path).start()
            back = events.get(timeout=10)
            assert isinstance(back, PortBack) and s.connected
            assert link.info()["vocab"] == "256"
            assert tokens(list(link.generate(prompt_ids=[72], max_tokens=3))) == greedy(blob, [72], 3)
    finally:
        vb.stop()


def test_upload_over_a_shared_session(board, blob, make_blob, tmp_path):
    """DeviceLink.upload on a session a monitor also reads: the board takes the new model."""
    target = tmp_path / "model.blob"
    target.write_bytes(make_blob("gru", "f32").read_bytes())
    data = blob.read_bytes()
    progress = []
    with VirtualBoard(target) as vb, BoardSession(vb.port) as s, DeviceLink(session=s) as link:
        watcher = s.subscribe(maxsize=100_000)
        assert link.info()["arch"] == "gru"
        sha = link.upload(data, on_progress=lambda done, total: progress.append((done, total)))
        assert link.wait_ready()["model"] == "ok" and link.info()["arch"] == "transformer"
        sent = [e for e in watcher.get_batch(timeout=0) if isinstance(e, SerialLine)]
    assert sha == hashlib.sha256(data).hexdigest() and target.read_bytes() == data
    assert progress[-1] == (len(data), len(data)) and len(progress) == -(-len(data) // 192)
    assert sum(e.raw.startswith(b"@UPDATA") for e in sent) == len(progress)


def test_reset_goes_through_the_protocol_on_a_pty(board, blob):
    with VirtualBoard(blob, boot_banner=True) as vb, DeviceLink(vb.port) as link:
        link.wait_ready()
        ready = link.reset(timeout=5)
        assert ready["model"] == "ok"


def dtr_rts_trace(reset):
    """(dtr, rts) after every modem-line change while `reset(port)` runs, on pyserial's loop://
    port (the physical edge: the lines are recorded instead of wired to a chip), with times."""
    import serial

    port = serial.serial_for_url("loop://")
    trace = []
    port._update_dtr_state = lambda: trace.append((port.dtr, port.rts, time.monotonic()))
    port._update_rts_state = lambda: trace.append((port.dtr, port.rts, time.monotonic()))
    reset(port)
    return trace


def test_resets_drive_dtr_rts_like_esptool():
    """Into the app: EN (RTS) pulsed low ≥ 100 ms while IO0 (DTR) stays high. Into the bootloader
    (esptool's classic sequence): EN released while IO0 is held low, then IO0 released."""
    from engine.device.reset import reset_into_app, reset_into_bootloader

    app = dtr_rts_trace(reset_into_app)
    assert all(dtr is False for dtr, _, _ in app)  # IO0 never pulled low
    held = [t for _, rts, t in app if rts]
    assert held and app[-1][1] is False and app[-1][2] - held[0] >= 0.1
    boot = dtr_rts_trace(reset_into_bootloader)
    release = next(i for i in range(1, len(boot)) if boot[i - 1][1] and not boot[i][1])
    assert boot[release][0] is True  # IO0 low as EN goes high: the ROM loader starts
    assert boot[-1][:2] == (False, False)


# ---- issue 13: every failure a message and an exit code ------------------------------------------

def no_traceback(r):
    assert "Traceback" not in r.stderr, r.stderr
    return r


def sample(ws, port, *args, timeout=30):
    return no_traceback(run_cli(ws, "sample", "b", "--engine", "device", "--port", port, "--prompt",
                                "Once", "--max-tokens", "8", *args, timeout=timeout))


@pytest.fixture
def tinylm_board(ws, blob):
    """`tinylm board --blob` in the background; yields (process, pty)."""
    procs = []

    def start(*extra):
        p = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(ws), "board", "--blob",
                              str(blob), *extra], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        procs.append(p)
        line = p.stdout.readline()
        assert line.startswith("virtual board on "), line
        return p, line.split(" on ")[1].split(" ")[0]

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            p.wait(10)


def test_long_prompt_through_the_cli(ws, tinylm_board):
    _, port = tinylm_board()
    prompt = "x" * 150  # 150 byte tokens of 3 digits (120 = 'x'): over one 512-byte line
    r = sample(ws, port, "--prompt", prompt)
    ref = no_traceback(run_cli(ws, "sample", "b", "--engine", "device", "--port", port, "--prompt",
                               "x", "--max-tokens", "8"))
    assert r.returncode == 0 and ref.returncode == 0, r.stderr + ref.stderr
    assert r.stdout.startswith(prompt) and "board: 8 tokens" in r.stderr


def test_board_killed_mid_generation_ends_with_a_message(ws, tinylm_board):
    proc, port = tinylm_board("--us-per-token", "50000")
    s = subprocess.Popen([sys.executable, "-m", "engine", "-w", str(ws), "sample", "b", "--engine",
                          "device", "--port", port, "--prompt", "Once", "--max-tokens", "150"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert s.stdout.read(4) == b"Once"
    time.sleep(1.0)  # tokens flowing
    proc.kill()  # kill -9 of `tinylm board`: its firmware child ends too, the pty closes
    t0 = time.monotonic()
    _, err = s.communicate(timeout=15)
    assert s.returncode == 1 and time.monotonic() - t0 < 5
    assert b"went away" in err and b"Traceback" not in err


def test_peer_that_accepts_and_hangs_up(ws):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        t0 = time.monotonic()
        r = sample(ws, f"socket://127.0.0.1:{srv.getsockname()[1]}")
        assert r.returncode == 1 and "went away" in r.stderr and time.monotonic() - t0 < 10
    finally:
        stop.set()
        srv.close()


@pytest.mark.parametrize("port, words", [
    ("socket://localhost", "socket://HOST:PORT"),
    ("socket://127.0.0.1:99999", "1-65535"),
    ("socket://127.0.0.1:1", "nothing listens there"),
    ("foo://board", "unknown port URL scheme"),
    ("/dev/ttyNOPE0", "no such port"),
])
def test_bad_ports_are_refused_clearly(port, words):
    with pytest.raises(PortNotFound, match=words) as e:
        BoardSession(port).open()
    assert e.value.exit_code == 2


def test_bad_port_through_the_cli(ws):
    r = sample(ws, "socket://localhost")
    assert r.returncode == 2 and "socket://HOST:PORT" in r.stderr, r.stderr


def test_busy_port(ws, board, blob):
    with VirtualBoard(blob) as vb, BoardSession(vb.port):
        with pytest.raises(PortBusy):
            BoardSession(vb.port).open()
        r = sample(ws, vb.port)
        assert r.returncode == 2 and "is busy" in r.stderr, r.stderr
    with pytest.raises(PortNotFound):
        BoardSession("/dev/ttyNOPE0").open()


class PtyPeer:
    """A foreign device on a pty (the physical edge): `answer(line) -> bytes` for every line the
    host sends."""

    def __init__(self, answer):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.answer = answer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        buf = b""
        while not self.stop.is_set():
            if not select.select([self.master], [], [], 0.1)[0]:
                continue
            try:
                buf += os.read(self.master, 4096)
            except OSError:
                continue  # no client on the slave right now
            *lines, buf = buf.split(b"\n")
            for line in lines:
                os.write(self.master, self.answer(line + b"\n"))

    def close(self):
        # the thread ends before its fds close: the next test's pty gets the same fd numbers (and
        # /dev/pts name), and a thread still reading there answered that test's lines (an echo
        # peer's thread made the next test see its own line back)
        self.stop.set()
        self.thread.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)


def test_echo_peer_is_not_a_tinylm_board(ws):
    peer = PtyPeer(lambda line: line)
    try:
        r = sample(ws, peer.port)
        assert r.returncode == 2 and "not a tinylm board" in r.stderr.lower(), r.stderr
        assert "vocabulary of 0" not in r.stderr
    finally:
        peer.close()


def test_board_speaking_another_protocol_version(ws):
    def answer(line):
        m = parse_line(line)
        return encode_line("INFO", id=m["id"], fw="9.0.0", proto=2, vocab=256, ctx=200)

    peer = PtyPeer(answer)
    try:
        r = sample(ws, peer.port)
        assert r.returncode == 2 and "protocol version 2" in r.stderr and "reflash" in r.stderr
    finally:
        peer.close()


def test_an_error_after_output_starts_on_its_own_line(ws):
    r = (subprocess.run(
        [sys.executable, "-m", "engine", "-w", str(ws), "sample", "b", "--engine", "device", "--port",
         "/dev/ttyNOPE0", "--prompt", "Once"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30))
    assert r.returncode == 2 and r.stdout.startswith("Once\nerror: "), r.stdout
    assert "Traceback" not in r.stdout
