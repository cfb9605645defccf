"""The virtual board in download mode: a board started "as if GPIO0 were held low". It serves the ESP
ROM serial bootloader (rom_loader.py) on a pty, writes into a flash image file, and once esptool is
done boots the app from that image on the same pty: firmware/build/host/tinylm-board with
`--flash-image IMAGE --offset <model partition> --stdio` as a child whose stdin/stdout are relayed
to the pty, so a DeviceLink on the same port gets @READY and INFO.

    with DownloadModeBoard(chip="esp32") as board:      # board.port = /dev/pts/N
        flash_blob(board.port, blob, board="esp32")      # esptool, no stub
        with DeviceLink(board.port) as link: link.info()  # the app, from the flashed image

When the app starts (a pty has no DTR/RTS, so no reset pulse ever arrives):
  - FLASH_END / FLASH_DEFL_END: right away (esptool's `--after soft-reset`, or `run`), or
  - the client closes the port after writing flash (esptool's `--after hard-reset` on a pty: the
    RTS pulse fails with ENOTTY, esptool warns and closes): at the next open.
A pty tells the board about a close only by POLLHUP while nobody has it open: a client that
closes and reopens within a few milliseconds goes unnoticed (then the board simply stays in the mode
it was in). In app mode, every new open of the port restarts the app (a monitor opening a real board resets it
through DTR), and a SLIP SYNC frame from the client (esptool connecting) puts the board back into
download mode: the auto-reset circuit's job on a real board, done here on the data line.

The app child gets PR_SET_PDEATHSIG (SIGTERM) and its stdin is our pipe: it dies with the board.
`python -m engine.device.download_board --flash-image F --chip esp32 --app-binary B` is the board
process; it prints `PTY /dev/pts/N` (or `ERROR message`) as its first line.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

from ..errors import Failure, TinyLMError, UserError
from .boardproc import BoardProcess
from .flash_image import FlashImage, create_erased_image
from .partitions import table_for_flash
from .rom_loader import CHIPS, RomLoader
from .slip import SlipDecoder, slip_encode

SYNC_FRAME_START = b"\xc0\x00\x08"  # a SLIP frame holding a SYNC request: never in PROTOCOL.md text
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies."""
    parent = os.getppid()
    prctl = getattr(_LIBC, "prctl", None)  # Linux only; elsewhere the stdin pipe still ends the app
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class DownloadServer:
    """The board process's loop: one pty, the ROM loader, and at most one app child."""

    def __init__(self, image: Path, chip: str, app_binary: Path, boot_banner: bool = False
                 ) -> None:
        self.flash = FlashImage(image)
        self.table = table_for_flash(self.flash.size)
        self.model = self.table.find("model")
        self.loader = RomLoader(CHIPS[chip], self.flash)
        self.decoder = SlipDecoder()
        self.image, self.chip, self.app_binary = Path(image), chip, Path(app_binary)
        self.boot_banner = boot_banner
        self.mode = "download"
        self.app: subprocess.Popen | None = None
        self.connected = False
        self._tail = b""
        self.master, slave = os.openpty()
        tty.setraw(slave)  # nothing written before a client configures the port is echoed
        self.port = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)

    # ---- the loop --------------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            if not self.connected:
                if self._hung_up(timeout_ms=20):
                    self._drain_app()
                    time.sleep(0.02)  # POLLHUP stays set while nobody has the port open
                    continue
                self.connected = True
                self._on_open()
            fds = [self.master] + ([self.app.stdout.fileno()] if self.app else [])
            ready, _, _ = select.select(fds, [], [], 0.2)
            if self.master in ready:
                self._from_client()
            if self.app is not None and self.app.stdout.fileno() in ready:
                self._from_app()
            if self.connected and self._hung_up(timeout_ms=0):
                self.connected = False
                self._on_close()
            self.flash.flush_if_due()

    def _hung_up(self, timeout_ms: int) -> bool:
        p = select.poll()
        p.register(self.master, select.POLLIN)
        events = p.poll(timeout_ms)
        return any(ev & select.POLLHUP and not ev & select.POLLIN for _, ev in events)

    def _on_open(self) -> None:
        self.decoder.reset()
        self._tail = b""
        if self.mode == "app":
            self._start_app()  # opening the port resets a real board (DTR), here too

    def _on_close(self) -> None:
        self.decoder.reset()
        if self.mode == "download" and self.loader.wrote:
            self.flash.flush()
            self.mode = "app"  # esptool's hard reset on a pty: the app boots at the next open
            self._log("flash written and the port closed: the app boots at the next open")

    def _from_client(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError as e:
            if e.errno in (errno.EIO, errno.EAGAIN):
                return  # EIO: the client closed the port; the hang-up check sees it
            raise
        if self.mode == "app":
            at = (self._tail + data).find(SYNC_FRAME_START)
            if at < 0:
                self._tail = data[-2:]
                self._to_app(data)
                return
            data = (self._tail + data)[at:]
            self._enter_download()
        for packet in self.decoder.feed(data):
            reply = self.loader.handle(packet)
            for line in self.loader.log:
                self._log(f"refused {line}")
            self.loader.log.clear()
            self._to_client(b"".join(slip_encode(p) for p in reply.packets))
            if reply.run_app:
                self._start_app()
                return  # anything after END in this read was for the ROM that just left

    def _from_app(self) -> None:
        data = os.read(self.app.stdout.fileno(), 65536)
        if not data:
            code = self.app.wait()
            self._log(f"the app exited (code {code}); reopen the port or flash again")
            self.app = None
        elif self.connected:
            self._to_client(data)

    def _drain_app(self) -> None:
        """No client: what the app prints is lost, as on a UART nobody listens to."""
        if self.app is not None:
            ready, _, _ = select.select([self.app.stdout.fileno()], [], [], 0)
            if ready:
                self._from_app()

    def _to_client(self, data: bytes) -> None:
        deadline = time.monotonic() + 2.0
        while data and time.monotonic() < deadline:
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:
                select.select([], [self.master], [], 0.1)
            except OSError:
                return  # the client went away: the bytes are lost, as on a real UART

    def _to_app(self, data: bytes) -> None:
        if self.app is None:
            return
        try:
            os.write(self.app.stdin.fileno(), data)
        except BrokenPipeError:
            pass

    # ---- modes -----------------------------------------------------------------------------------

    def _start_app(self) -> None:
        self._stop_app()
        self.flash.flush()
        self.mode = "app"
        self.loader.wrote = False
        self._tail = b""
        cmd = [str(self.app_binary), "--flash-image", str(self.image), "--offset",
               hex(self.model.offset), "--partition-size", hex(self.model.size), "--stdio",
               "--board", self.chip] + (["--boot-banner"] if self.boot_banner else [])
        self.app = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    preexec_fn=die_with_parent)
        os.set_blocking(self.app.stdout.fileno(), False)

    def _stop_app(self) -> None:
        if self.app is None:
            return
        self.app.stdin.close()
        self.app.terminate()
        try:
            self.app.wait(2)
        except subprocess.TimeoutExpired:
            self.app.kill()
            self.app.wait()
        self.app.stdout.close()
        self.app = None

    def _enter_download(self) -> None:
        self._stop_app()
        self.mode = "download"
        self.decoder.reset()
        self.loader.session = None
        self._log("SYNC received: back in download mode")

    def close(self) -> None:
        self._stop_app()
        self.flash.close()
        os.close(self.master)

    @staticmethod
    def _log(text: str) -> None:
        sys.stderr.write(f"download-mode board: {text}\n")
        sys.stderr.flush()


# ---- the board process ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.device.download_board")
    p.add_argument("--flash-image", required=True, type=Path)
    p.add_argument("--chip", choices=list(CHIPS), default="esp32")
    p.add_argument("--flash-size", type=lambda s: int(s, 0), default=0)
    p.add_argument("--app-binary", required=True, type=Path)
    p.add_argument("--boot-banner", action="store_true")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if not args.flash_image.exists():
            create_erased_image(args.flash_image, args.flash_size or CHIPS[args.chip].flash_size)
        server = DownloadServer(args.flash_image, args.chip, args.app_binary, args.boot_banner)
    except (TinyLMError, OSError) as e:
        print(f"ERROR {e}", flush=True)
        return 2
    print(f"PTY {server.port}", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


class DownloadModeBoard(BoardProcess):
    """`with DownloadModeBoard(chip="esp32-c3") as b: flash_blob(b.port, ...)` — a board in
    download mode on a pty; `.flash_image` is its flash (a temporary one unless given)."""

    def __init__(self, flash_image: Path | None = None, chip: str = "esp32",
                 boot_banner: bool = False, flash_size: int = 0) -> None:
        super().__init__()
        if chip not in CHIPS:
            raise UserError(f"--chip {chip}: the download-mode board emulates "
                            f"{', '.join(CHIPS)}")
        self._tmp: tempfile.TemporaryDirectory | None = None
        if flash_image is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tinylm-flash-")
            flash_image = Path(self._tmp.name) / f"flash-{chip}.bin"
        self.flash_image = Path(flash_image)
        self.chip = chip
        self.boot_banner = boot_banner
        self.flash_size = flash_size

    def start(self, timeout: float = 10.0) -> "DownloadModeBoard":
        from .virtual import build_virtual_board

        app = build_virtual_board()
        cmd = [sys.executable, "-m", "engine.device.download_board", "--flash-image",
               str(self.flash_image), "--chip", self.chip, "--app-binary", str(app)]
        cmd += ["--flash-size", str(self.flash_size)] if self.flash_size else []
        cmd += ["--boot-banner"] if self.boot_banner else []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     text=True, env=env, preexec_fn=die_with_parent)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if line.startswith("PTY "):
            self.port = line.split(" ", 1)[1]
            return self
        self.stop()
        if line.startswith("ERROR "):
            raise UserError(f"the download-mode board did not start: {line[6:]}")
        raise Failure(f"the download-mode board did not start within {timeout:.0f} s "
                      f"({line or 'no output'})")

    def stop(self) -> None:
        super().stop()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._tmp is not None and (self.proc is None or self.proc.poll() is not None):
            self._tmp.cleanup()
            self._tmp = None


if __name__ == "__main__":
    sys.exit(main())
