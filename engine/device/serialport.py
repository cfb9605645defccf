"""Opening a port — a device path, a pty, `socket://HOST:PORT` or `rfc2217://HOST:PORT` — with errors
that say what to change, instead of pyserial's internals ("'<=' not supported between 'int' and
'NoneType'" for a socket URL without a port)."""

from __future__ import annotations

import errno
from typing import Any
from urllib.parse import urlsplit

from .errors import PortBusy, PortNotFound, PortUnusable

NETWORK_SCHEMES = ("socket", "rfc2217")  # pyserial URL handlers that need HOST:PORT
OTHER_SCHEMES = ("loop", "spy", "hwgrep", "alt", "cp2110")
_HINT = "`tinylm ports` lists the ports here; `--port virtual` starts the virtual board"


def check_port_url(port: str) -> None:
    """Refuse a port pyserial would fail on obscurely: empty, an unknown URL scheme, a socket URL
    without a valid host and port."""
    if not port:
        raise PortNotFound(f"no port given: {_HINT}")
    if "://" not in port:
        return
    scheme = port.split("://", 1)[0].lower()
    if scheme in OTHER_SCHEMES:
        return
    if scheme not in NETWORK_SCHEMES:
        raise PortNotFound(f"{port}: unknown port URL scheme '{scheme}://'; use a device path "
                           "(/dev/ttyUSB0), socket://HOST:PORT or rfc2217://HOST:PORT")
    parts = urlsplit(port)
    try:
        tcp = parts.port
    except ValueError:
        tcp = None
    if not parts.hostname or tcp is None or not 0 < tcp < 65536 or parts.path not in ("", "/"):
        raise PortNotFound(f"{port}: not a valid {scheme} URL; give {scheme}://HOST:PORT with a "
                           f"port number 1-65535 (e.g. {scheme}://127.0.0.1:4444)")
    if parts.query and scheme == "socket" and not parts.query.startswith("logging="):
        raise PortNotFound(f"{port}: socket URLs take no options but ?logging=LEVEL; drop "
                           f"'?{parts.query}'")


def open_serial(port: str, baud: int = 115200, exclusive: bool = True, timeout: float = 0.1,
                write_timeout: float = 2.0) -> Any:
    """An open pyserial port. `exclusive` locks a device (flock) so a second session, the app or
    `tinylm monitor` in another terminal gets "busy" instead of stealing half of the lines."""
    import serial

    check_port_url(port)
    try:
        ser = serial.serial_for_url(port, baudrate=baud, timeout=timeout,
                                    write_timeout=write_timeout, exclusive=exclusive,
                                    do_not_open=True)
        # DTR and RTS deasserted from the first moment (IO0 and EN high on an ESP32 dev board):
        # pyserial would assert both on open, one after the other, which can glitch EN and
        # restart the chip, or hold it in reset on adapters that wire them straight through
        ser.dtr = False
        ser.rts = False
        ser.open()
        return ser
    except ValueError as e:  # pyserial's own URL and setting checks
        raise PortNotFound(f"{port}: {e}; {_HINT}") from e
    except serial.SerialException as e:
        raise explain_open_error(port, e) from e
    except OSError as e:  # socket errors a URL handler lets through
        raise explain_open_error(port, e) from e


def explain_open_error(port: str, e: OSError) -> PortUnusable:
    """Turn pyserial's open error into what the user does next."""
    text = str(e)
    code = e.errno
    if code is None and isinstance(e.__context__, OSError):
        code = e.__context__.errno
    if code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text:
        return PortBusy(f"{port} is busy: another program has it open (another `tinylm monitor`, "
                        "the app, esptool, screen or minicom); close it and try again")
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return PortUnusable(f"{port}: permission denied; add yourself to the serial group "
                            "(sudo usermod -aG dialout $USER, then log in again)")
    if "Connection refused" in text or code == errno.ECONNREFUSED:
        return PortNotFound(f"{port}: nothing listens there (connection refused); is the board "
                            "server (`tinylm board --emulate rv32`, ser2net, ...) running?")
    if "Name or service not known" in text or "nodename nor servname" in text:
        return PortNotFound(f"{port}: unknown host name")
    if code == errno.ENOENT or "No such file" in text:
        return PortNotFound(f"{port}: no such port; is the board plugged in? {_HINT}")
    return PortNotFound(f"cannot open {port}: {text}; {_HINT}")


def has_modem_lines(ser: Any) -> bool:
    """True where DTR/RTS reach a board (a USB-UART bridge, USB-Serial/JTAG); False on a pty, a
    socket:// or rfc2217:// (network) port, where a reset has to be the @RESET command."""
    import fcntl
    import struct
    import termios

    try:
        fd = ser.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # URL handlers (socket://) have no file descriptor
    try:
        fcntl.ioctl(fd, termios.TIOCMGET, struct.pack("I", 0))
    except OSError:
        return False  # ENOTTY / EINVAL: a pty or a driver without modem control
    return True
