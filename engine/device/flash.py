"""Flashing a weight blob (and optionally the firmware) into a board's flash through esptool's Python
API — never its CLI in a subprocess — then checking on the board that the app loaded that blob.

    result = flash_blob("/dev/ttyUSB0", Path("experiments/x/model.int8.bin"), board="esp32",
                        on_progress=lambda done, total, what: ...)
    result.verification   # "board": INFO reported the blob's sha256

The esptool calls: `cmds.connect_esp` (chip auto-detected), `cmds.attach_flash`,
`cmds.detect_flash_size`, `cmds.write_flash` (ROM loader, no stub; compressed or not; esptool
checks every region with SPI_FLASH_MD5 after writing it) and `cmds.reset_chip`. esptool reports
through a global logger; `_EsptoolSink`, installed with `esptool.logger.log.set_logger` for the
length of one flash and removed in `finally`, turns its progress bars into `on_progress(done, total,
what)` and keeps the lines it printed for error messages. Nothing here prints.

Everything that can be refused is refused before a byte is written: a file that is not a blob, a
blob larger than the model partition (firmware/esp32/partitions*.csv, picked by the detected flash
size), a model whose runtime RAM does not fit the board, a detected chip that is not the board the
experiment was built for.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import Failure, UserError
from .partitions import Partition, table_for_flash

ProgressFn = Callable[[int, int, str], None]
FLASHABLE = ("esp32", "esp32-s3", "esp32-c3")
QUANTS = {0: "f32", 1: "int8", 2: "ternary"}  # BLOB.md header `quant`
BLOB_HEADER = 128
PTY_MAJORS = range(136, 144)  # Linux Unix98 pty slaves: no DTR/RTS to pulse
_ESPTOOL = threading.Lock()  # esptool's logger is process-global: one flash at a time


class FlashStopped(Failure):
    """should_stop() asked to stop mid-write: the region being written is incomplete."""


@dataclass(frozen=True)
class BlobFile:
    path: Path
    data: bytes
    quant: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class WrittenRegion:
    what: str  # "blob" or "app"
    offset: int
    size: int
    md5: str  # what esptool's SPI_FLASH_MD5 check compared against


@dataclass
class FlashResult:
    port: str
    chip: str  # detected, as engine/budget names boards
    flash_size: int
    partition_table: Path
    model: Partition
    blob_sha256: str
    regions: list[WrittenRegion]
    compressed: bool
    seconds: float  # connect to reset, esptool's part
    write_seconds: float  # inside write_flash (erase, data, MD5): what throughput is measured on
    verification: str  # "board" | "mismatch" | "no-answer" | "skipped"
    detail: str  # one sentence: what was verified, or exactly what differs
    board_info: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # esptool's warnings and notes

    @property
    def bytes_written(self) -> int:
        return sum(r.size for r in self.regions)

    @property
    def kb_per_s(self) -> float:
        return self.bytes_written / 1024 / self.write_seconds if self.write_seconds else 0.0


# ---- before connecting ---------------------------------------------------------------------------

def read_blob(path: Path) -> BlobFile:
    """The blob's bytes, refused unless it is a whole firmware/BLOB.md file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"blob {path}: {e.strerror or e}; `tinylm export NAME` writes it") from e
    if len(data) < BLOB_HEADER or data[:4] != b"TLMB":
        raise UserError(f"{path} is not a tinylm blob (no TLMB header): flash what `tinylm export` "
                        "wrote (experiments/NAME/model.<quant>.bin)")
    total = struct.unpack_from("<I", data, len(data) - 8)[0]
    if total != len(data):
        raise UserError(f"{path}: the trailer says {total} bytes but the file has {len(data)}: a "
                        "truncated or damaged blob; export it again")
    quant = QUANTS.get(struct.unpack_from("<I", data, 16)[0], "f32")
    return BlobFile(path, data, quant)


def check_board_name(board: str) -> None:
    if board not in FLASHABLE:
        raise UserError(f"device.board is '{board}': only {', '.join(FLASHABLE)} boards are "
                        "flashed with esptool; set device.board to the chip you plug in "
                        "(`tinylm set NAME device.board=esp32`), or use `--port virtual`")


def ram_problem(config: Any, board: str, quant: str) -> str | None:
    """Why the model's runtime RAM does not fit `board`, or None. The one place flashing asks
    engine/budget (config: an ExperimentConfig)."""
    from dataclasses import replace

    from engine.config.budget import compute

    b = compute(replace(config, quant=replace(config.quant, method=quant)), board)
    if b.ram_over <= 0:
        return None
    fix = f"; try {b.advice[0]}" if b.advice else ""
    placed = b.placement
    if b.ram_total <= b.board.ram_bytes and not placed.ok:  # enough in total, not in one piece
        return (f"the {quant} model's {placed.failed.replace('_', ' ')} needs {placed.needed:,} "
                f"bytes in one block, the largest free block on {board} is {placed.largest_left:,}:"
                f" it would fail to load after flashing{fix}")
    return (f"the {quant} model needs {b.ram_total:,} bytes of RAM at run time, {board} has "
            f"{b.board.ram_bytes:,} for it ({b.ram_over:,} over): it would fail to load after "
            f"flashing{fix}")


def is_pty(port: str) -> bool:
    """A pseudo-terminal (the virtual boards) has no modem lines: esptool cannot pulse DTR/RTS."""
    try:
        return os.major(os.stat(port).st_rdev) in PTY_MAJORS
    except (OSError, ValueError):
        return False


# ---- esptool's logger ----------------------------------------------------------------------------

def _template_logger() -> type:
    from esptool.logger import TemplateLogger

    class _EsptoolSink(TemplateLogger):
        """esptool's output, caught: progress to on_progress, text kept for error messages."""

        def __init__(self, on_progress: ProgressFn | None,
                     should_stop: Callable[[], bool] | None) -> None:
            self.on_progress = on_progress
            self.should_stop = should_stop
            self.lines: list[str] = []
            self.notes: list[str] = []
            self.region: tuple[str, int, int] = ("", 0, 0)  # what, offset, size

        def print(self, *args: Any, **kwargs: Any) -> None:
            text = kwargs.get("sep", " ").join(str(a) for a in args).strip()
            if text:
                self.lines = self.lines[-200:] + [text]

        def note(self, message: str) -> None:
            self.notes.append(message)

        def warning(self, message: str) -> None:
            self.notes.append(message)

        def error(self, message: str) -> None:
            self.lines.append(message)

        def stage(self, finish: bool = False) -> None:
            pass

        def set_verbosity(self, verbosity: str) -> None:
            pass

        def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "",
                         suffix: str = "", bar_length: int = 30) -> None:
            if self.should_stop is not None and self.should_stop():
                raise FlashStopped(f"flashing stopped at {cur_iter} of {total_iters} bytes of the "
                                   f"{self.region[0]}: that region is incomplete, flash again")
            what, offset, size = self.region
            m = re.search(r"Writing at (0x[0-9a-fA-F]+)", prefix)
            # the address esptool reports is offset + uncompressed bytes written, exact even when
            # the data travels compressed
            done = int(m.group(1), 16) - offset if m else cur_iter * size // max(total_iters, 1)
            if self.on_progress is not None:
                self.on_progress(max(0, min(done, size)), size, what)

    return _EsptoolSink


# ---- the flash -----------------------------------------------------------------------------------

def flash_blob(port: str, blob_path: Path, *, board: str, config: Any = None,
               offset: int | None = None, app: Path | None = None, verify: bool = True,
               compress: bool = True, baud: int | None = None,
               on_progress: ProgressFn | None = None,
               should_stop: Callable[[], bool] | None = None,
               info_timeout: float = 10.0) -> FlashResult:
    """Write `blob_path` to the `model` partition (or `offset`) of the board on `port`, and `app`
    (a firmware .bin) to its factory partition; reset into the app; with `verify`, ask the app's
    INFO for the blob's sha256. `board` is the chip the blob was built for (the experiment's
    device.board); `config` (its ExperimentConfig) adds the runtime-RAM check."""
    check_board_name(board)
    blob = read_blob(blob_path)
    app_bytes = _read_app(app) if app is not None else None
    if config is not None:
        problem = ram_problem(config, board, blob.quant)
        if problem:
            raise UserError(problem)
    with _ESPTOOL:
        from esp_pylib.logger import EspLog
        from esptool.logger import log

        sink = _template_logger()(on_progress, should_stop)
        saved = EspLog.instance
        log.set_logger(sink)
        try:
            result = _flash(port, blob, app_bytes, board, offset, compress, baud, sink)
        finally:
            EspLog.instance = saved  # esptool's own logger back, whatever happened
    if verify:
        _verify_on_board(result, blob, info_timeout)
    else:
        result.verification, result.detail = "skipped", (
            "written and MD5-checked by esptool; INFO not asked (--no-verify)")
    return result


def _read_app(app: Path) -> bytes:
    try:
        data = Path(app).read_bytes()
    except OSError as e:
        raise UserError(f"--app {app}: {e.strerror or e}") from e
    if not data or data[0] != 0xE9:
        raise UserError(f"--app {app} is not an ESP app image (first byte {data[:1].hex() or 'none'}"
                        ", want e9): give build/<project>.bin from `idf.py build`")
    return data


def _flash(port: str, blob: BlobFile, app: bytes | None, board: str, offset: int | None,
           compress: bool, baud: int | None, sink: Any) -> FlashResult:
    import serial
    from esptool import cmds
    from esptool.util import FatalError, flash_size_bytes

    pty = is_pty(port)
    t0 = time.monotonic()
    esp = None
    try:
        esp = cmds.connect_esp(port=port, chip="auto", before="no-reset" if pty else
                               "default-reset", connect_attempts=3)
        chip = esp.CHIP_NAME.lower()
        if chip != board:
            raise UserError(f"the board on {port} is an {chip}, but the blob was built for "
                            f"{board} (device.board): set device.board={chip} and export again "
                            f"(`tinylm set NAME device.board={chip}`), or plug in an {board}")
        if baud and baud != esp.ESP_ROM_BAUD:
            esp.change_baud(baud)
        cmds.attach_flash(esp)
        size_name = cmds.detect_flash_size(esp)
        if size_name is None:
            raise Failure(f"esptool could not read the flash size of the {chip} on {port} "
                          "(unknown flash id): check the board's flash chip")
        flash_size = flash_size_bytes(size_name)
        table = table_for_flash(flash_size)
        model = table.find("model")
        regions = [_region("blob", blob.data, offset if offset is not None else model.offset,
                           model if offset is None else None, flash_size, blob.path)]
        if app is not None:
            factory = table.factory_app()
            regions.insert(0, _region("app", app, factory.offset, factory, flash_size, None))
        written = []
        write_s = 0.0
        for what, at, data in regions:
            sink.region = (what, at, len(data))
            t_write = time.monotonic()
            cmds.write_flash(esp, [(at, data)], flash_size="keep", compress=compress,
                             no_compress=not compress, force=False)
            write_s += time.monotonic() - t_write
            written.append(WrittenRegion(what, at, len(data), hashlib.md5(data).hexdigest()))
        cmds.reset_chip(esp, "soft-reset" if pty else "hard-reset")
    except FatalError as e:
        raise _translate(e, port, sink) from e
    except (serial.SerialException, OSError) as e:
        raise Failure(f"the connection to {port} broke while flashing ({e}): the board may hold "
                      "a half-written region; reconnect it and flash again") from e
    finally:
        if esp is not None:
            esp._port.close()
    return FlashResult(port, chip, flash_size, table.path, model, blob.sha256, written, compress,
                       time.monotonic() - t0, write_s, "skipped", "", notes=list(sink.notes))


def _region(what: str, data: bytes, at: int, part: Partition | None, flash_size: int,
            path: Path | None) -> tuple[str, int, bytes]:
    """Refuse a region that does not fit where it goes, before anything is written."""
    name = f"{what} {path}" if path else what
    if part is not None and len(data) > part.size:
        raise UserError(f"the {name} is {len(data):,} bytes, the '{part.name}' partition holds "
                        f"{part.size:,} ({len(data) - part.size:,} over): pick a smaller model or "
                        "quantization (`tinylm budget NAME`), or a board with more flash")
    if at % 0x1000 or at + len(data) > flash_size:
        raise UserError(f"the {name} ({len(data):,} bytes) at {at:#x} does not fit the "
                        f"{flash_size // (1 << 20)} MB flash or is not 4 KB aligned")
    return what, at, data


def _translate(e: Exception, port: str, sink: Any) -> Exception:
    """esptool's FatalError as an engine error: what happened, why, what to do."""
    text = str(e).strip()
    if "Could not open" in text:
        why = text.split("\n")[1].strip("() ") if "\n" in text else text
        return UserError(f"cannot open {port}: {why}. Check the port name (`tinylm doctor` lists "
                         "serial ports); for a virtual board start `tinylm board --download-mode`")
    if "MD5 of file does not match" in text or "written flash region is empty" in text:
        md5s = [ln for ln in sink.lines if ln.startswith(("Input MD5", "Flash MD5"))]
        return Failure(f"verification failed on {port}: what the flash holds is not what was sent "
                       f"({'; '.join(md5s) or text}): flash again; if it repeats, the flash chip or "
                       "the power supply is suspect")
    if "Failed to connect" in text or "No serial data received" in text:
        return Failure(f"no ESP ROM bootloader answered on {port}: put the board in download mode "
                       "(hold BOOT / GPIO0 low while pressing RESET) and flash again; a board "
                       f"already running the tinylm firmware also takes --over-protocol ({text})")
    if "Invalid head of packet" in text:
        return Failure(f"something answered on {port}, but not the ESP ROM bootloader (the tinylm "
                       "app?): flash it with --over-protocol, or reset it into download mode")
    return Failure(f"esptool failed on {port}: {text}")


# ---- after the reset -----------------------------------------------------------------------------

def _verify_on_board(result: FlashResult, blob: BlobFile, timeout: float) -> None:
    """Ask the app for INFO until it answers (it is booting) and compare the blob it loaded."""
    from .link import DeviceError, DeviceLink

    deadline = time.monotonic() + timeout
    info: dict[str, str] | None = None
    last: DeviceError | None = None
    with DeviceLink(result.port, timeout=min(2.0, timeout)) as link:
        while info is None and time.monotonic() < deadline:
            try:
                info = link.info()
            except DeviceError as e:
                last = e
                if e.code != "timeout":  # the app runs and answered: no retry will change it
                    break
    if info is None and last is not None and last.code != "timeout":
        result.verification = "mismatch"
        result.detail = (f"the app answered INFO with '{last.code}' ({last}): the flashed blob did "
                         "not load; export it again and flash again")
        return
    if info is None:
        result.verification = "no-answer"
        result.detail = (f"written and MD5-checked by esptool, but the app did not answer INFO "
                         f"within {timeout:.0f} s: is the tinylm firmware on the board? "
                         "(--app FIRMWARE.bin writes it)")
        return
    result.board_info = info
    got_sha, got_size = info.get("blob_sha", ""), info.get("blob_size", "")
    if got_sha == blob.sha256 and got_size == str(len(blob.data)):
        result.verification = "board"
        result.detail = f"verified on the board: INFO reports sha256 {got_sha[:16]}… ({got_size} bytes)"
        return
    diffs = []
    if got_sha != blob.sha256:
        diffs.append(f"sha256 {got_sha or '(none)'} instead of {blob.sha256}")
    if got_size != str(len(blob.data)):
        diffs.append(f"blob_size {got_size or '(none)'} instead of {len(blob.data)}")
    result.verification = "mismatch"
    result.detail = ("the board's app reports another blob: " + "; ".join(diffs)
                     + " (a firmware reading another partition, or a stale model: flash again)")
