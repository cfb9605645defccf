"""The firmware builds (host, C unit tests, rv32 cross build) and the virtual board speaks
firmware/PROTOCOL.md over a real pseudo-terminal through pyserial."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time

import pytest
from protocol_util import FIRMWARE, PtyBoard, StdioBoard, build, needs_rv32, run_make

from engine.blob.format import read_blob
from engine.blob.reference import Reference
from engine.config import budget
from engine.device.emulated import EmulatedBoard
from engine.device.link import DeviceLink, GenerationSummary, TokenEvent
from engine.device.protocol import chunk_crc, encode_line

pytestmark = pytest.mark.slow


def test_host_builds(board):
    assert board.exists()


def test_c_unit_tests():
    r = run_make("test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failures" in r.stdout


def test_integer_float_ops_are_ieee():
    """core/softf.h (the float * and + of FPU-less cores) against the host's SSE floats, bit for bit,
    on > 300 M cases (ties, cancellation, every class of operand); ~3 s."""
    r = run_make("test-softf")
    assert r.returncode == 0, r.stdout + r.stderr
    for op in ("fmul", "fadd", "i2f"):
        assert re.search(rf"^{op}: \d{{8,}} cases, 0 mismatches$", r.stdout, re.M), r.stdout


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang (libFuzzer) not installed (CI installs it)")
def test_fuzz_corpus_replays_clean():
    """The libFuzzer harnesses (ASan + UBSan, abort on the first report) replay their seed corpus:
    parser, kernels (SSE2 and portable: T2 tables, integer floats) and protocol run clean on every
    seed. A crash found by bench/bench_firmware.py --fuzz goes into the corpus and is replayed here."""
    r = run_make("-j3", "fuzz")
    assert r.returncode == 0, r.stdout + r.stderr
    corpus = FIRMWARE / "fuzz" / "corpus"
    env = {"PATH": "/usr/bin:/bin", "TL_FUZZ_BLOB": str(corpus / "blob" / "transformer_int8.blob")}
    for harness, seeds in (("blob", "blob"), ("blob_portable", "blob"), ("protocol", "protocol")):
        files = sorted(str(p) for p in (corpus / seeds).iterdir())
        assert len(files) >= 6
        r = subprocess.run([str(FIRMWARE / "build" / "fuzz" / f"fuzz_{harness}"), *files],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, f"fuzz_{harness}: {r.stderr[-3000:]}"
        assert r.stderr.count("Executed ") == len(files)


@needs_rv32
def test_rv32_profile_build_accounts_for_every_instruction(stories_blob):
    """The profile build (TL_PROF marks) charges each token's instructions to sections; they must
    add up to the token's total, or bench/profile_rv32.py would mislead."""
    sys.path.insert(0, str(FIRMWARE.parent / "bench"))
    from profile_rv32 import ELF, profile

    build("rv32-prof")
    assert ELF.exists()
    rows = profile(stories_blob("ternary", int_attention=True))
    assert rows["total"] <= rows["wall"] < rows["total"] + 200
    assert min(rows[k] for k in ("qkv", "w13", "w2", "scores", "values", "head")) > 1000


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None,
                    reason="riscv64-unknown-elf-gcc not installed (CI installs it)")
def test_rv32_builds_with_werror():
    r = run_make("rv32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (FIRMWARE / "build" / "rv32" / "tinylm-rv32.elf").exists()


def rv32_greedy(path, ids: list[int], n: int) -> tuple[list[int], list[int]]:
    """Greedy tokens and per-token instruction counts of the rv32 firmware under qemu (which boots,
    reached by DeviceLink): a RESET first, whose READY must report the blob loaded."""
    with EmulatedBoard(path) as eb, DeviceLink(eb.port, timeout=120) as link:
        assert link.reset(timeout=60)["model"] == "ok"
        assert link.info()["board"] == "rv32"
        events = list(link.generate(prompt_ids=ids, max_tokens=n, temperature=0))
    toks = [e for e in events if isinstance(e, TokenEvent)]
    assert isinstance(events[-1], GenerationSummary)
    return [t.token for t in toks], [t.instructions for t in toks]


@needs_rv32
def test_rv32_under_qemu_matches_reference(stories_blob):
    """Soft-float rv32imc gives the same bits: same greedy tokens as the reference; ir counted."""
    path = stories_blob("int8")
    want = list(Reference(path).generate([1, 403, 407, 261, 378], None, 12))
    toks, irs = rv32_greedy(path, [1, 403, 407, 261, 378], 12)
    assert toks == want
    assert all(ir > 100_000 for ir in irs)


@needs_rv32
@pytest.mark.parametrize("method", ["int8", "ternary"])
def test_rv32_integer_mode_matches_reference(stories_blob, method):
    """Integer mode (BLOB.md flags bit 1) on soft-float rv32imc: the reference's greedy tokens, and
    far fewer instructions than the float arithmetic (which is ~40 M per token here)."""
    path = stories_blob(method, int_attention=True)
    ids = [1, 403, 407, 261, 378]
    want = list(Reference(path).generate(ids, None, 24))
    toks, irs = rv32_greedy(path, ids, 24)
    assert toks == want
    assert max(irs) < 6_000_000


@pytest.mark.parametrize("method", ["int8", "ternary"])
def test_integer_mode_ram_report(board, stories_blob, method):
    """The board's reported RAM for an integer-mode blob is budget.runtime_ram's (int8 KV cache;
    ternary: plus the T2 lookup tables)."""
    path = stories_blob(method, int_attention=True)
    with StdioBoard("--blob", str(path)) as b:
        assert b.link.msg()["model"] == "ok"
        info = b.link.call("INFO")
        info_fields_match(info, path)
    cfg = read_blob(path).config()
    stories_cfg = read_blob(stories_blob(method)).config()
    assert budget.runtime_ram(cfg)["total"] < budget.runtime_ram(stories_cfg)["total"]
    assert budget.runtime_ram(cfg)["t2_tables"] == (8320 if method == "ternary" else 0)


def info_fields_match(info, path, board_name="host", ram_total=1 << 30):
    blob = read_blob(path)
    h = blob.header
    data = path.read_bytes()
    ram = budget.runtime_ram(blob.config(), h.quant)["total"]
    assert info["arch"] == h.arch and info["quant"] == h.quant
    assert info.int("dim") == h.dim and info.int("layers") == h.n_layers
    assert info.int("heads") == h.n_heads and info.int("kv_heads") == h.n_kv_heads
    assert info.int("vocab") == h.vocab_size and info.int("ctx") == h.seq_len
    assert info.int("blob_size") == len(data) == info.int("flash")
    assert info["blob_sha"] == hashlib.sha256(data).hexdigest()
    assert info.int("ram") == ram
    # heap: the real free heap after the model's blocks (the host clamps its one region to 256 MB)
    region = min(ram_total - budget.IO_BUFFER_BYTES, 256 << 20)
    assert info.int("heap") == region - (ram - budget.IO_BUFFER_BYTES) == info.int("heap_block")
    assert info["board"] == board_name and info["proto"] == "1"


def test_ready_after_banner_and_info_over_pty(board, stories_blob):
    path = stories_blob("int8")
    with PtyBoard(path, boot_banner=True, ram=1000000, board="esp32") as b:
        link = b.open()
        ready = link.msg()
        assert ready.type == "READY" and ready["model"] == "ok" and ready["proto"] == "1"
        assert any(n.startswith(b"ets Jun") for n in link.noise)
        assert any(b"cpu_start" in n for n in link.noise)
        info = link.call("INFO")
        assert info.type == "INFO"
        info_fields_match(info, path, "esp32", 1000000)


def test_corrupted_lines_and_bad_commands(board, make_blob):
    path = make_blob("transformer", "f32")
    with PtyBoard(path) as b:
        link = b.open()
        assert link.msg().type == "READY"
        good = encode_line("INFO", id=5)
        bad = good.replace(b"id=5", b"id=6")  # CRC no longer matches
        link.write(bad)
        err = link.msg()
        assert err.type == "ERR" and err["code"] == "crc" and err["id"] == "0"
        link.write(b"@INFO id=7\n")  # no CRC at all
        assert link.msg()["code"] == "crc"
        link.write(encode_line("INFO"))  # no id
        assert link.msg()["code"] == "parse"
        assert link.call("FLY")["code"] == "unknown"
        link.write(b"@" + b"A" * 600 + b"\n")
        assert link.msg()["code"] == "too_long"
        link.write(b"I (12) noise line that is ignored\n")
        assert link.call("GEN", ids="1,2", max=2, temp="-1")["code"] == "bad_arg"
        assert link.call("GEN", ids="1,999", max=2)["code"] == "bad_arg"
        assert link.call("GEN", ids="1", hex="41", max=2)["code"] == "bad_arg"
        assert link.call("GEN", ids="1", bogus=3)["code"] == "bad_arg"
        assert link.call("INFO").type == "INFO"  # still alive
        assert link.call("STOP").type == "OK"  # idle STOP


def test_stop_interrupts_long_generation(board, stories_blob):
    with PtyBoard(stories_blob("f32"), us_per_token=20000, boot_banner=True) as b:
        link = b.open()
        assert link.msg().type == "READY"
        gid = link.send("GEN", ids="1,403", max=400, temp=0, topk=0, topp=0, rep=1, seed=1)
        seen = 0
        while seen < 3:
            m = link.msg()
            if m.type == "TOK":
                seen += 1
        assert link.call("GEN", ids="1", max=2)["code"] == "busy"
        t0 = time.monotonic()
        sid = link.send("STOP")
        end = None
        while True:
            m = link.msg()
            if m.type == "END":
                end = m
                assert m.int("id") == gid and m["reason"] == "stop" and m.int("n") < 400
            elif m.type == "OK" and m.int("id") == sid:
                break
        assert end is not None and time.monotonic() - t0 < 1.0
        toks, end = link.generate(ids=[1, 403], max=3)
        assert len(toks) == 3 and end["reason"] == "max"


def upload(link, data: bytes, corrupt_chunk: int | None = None, sha: str | None = None):
    sha = sha or hashlib.sha256(data).hexdigest()
    ok = link.call("UPBEGIN", size=len(data), sha=sha)
    assert ok.type == "OK", ok
    chunk = ok.int("chunk")
    retried = 0
    for k, off in enumerate(range(0, len(data), chunk)):
        part = data[off:off + chunk]
        if k == corrupt_chunk:
            r = link.call("UPDATA", off=off, hex=part.hex(), crc=chunk_crc(part[::-1] + b"x"))
            assert r.type == "ERR" and r["code"] == "chunk_crc"
            retried += 1
        r = link.call("UPDATA", off=off, hex=part.hex(), crc=chunk_crc(part))
        assert r.type == "OK" and r.int("off") == off + len(part), r
    if corrupt_chunk is not None:
        assert retried == 1
    return link.call("UPEND", timeout=30)


def test_upload_with_retry_and_hash_mismatch(board, make_blob, tmp_path):
    old = make_blob("gru", "int8")
    new = make_blob("transformer", "ternary", seed=3)
    target = tmp_path / "model.blob"
    target.write_bytes(old.read_bytes())
    with PtyBoard(target) as b:
        link = b.open()
        assert link.msg().type == "READY"
        assert link.call("INFO")["arch"] == "gru"
        data = new.read_bytes()
        # a wrong sha: rejected, the old model keeps answering, the file is untouched
        bad = upload(link, data, sha="0" * 64)
        assert bad.type == "ERR" and bad["code"] == "hash"
        assert link.call("INFO")["arch"] == "gru"
        assert target.read_bytes() == old.read_bytes()
        toks, end = link.generate(ids=[65, 66], max=4)
        assert len(toks) == 4
        # a corrupt blob with the right sha: bad_blob, old model stays
        broken = bytearray(data)
        broken[200] ^= 0xFF
        r = upload(link, bytes(broken))
        assert r.type == "ERR" and r["code"] == "bad_blob"
        assert link.call("INFO")["arch"] == "gru"
        # an out-of-order chunk is refused with code=offset
        assert link.call("UPBEGIN", size=len(data), sha=hashlib.sha256(data).hexdigest()).type == "OK"
        r = link.call("UPDATA", off=192, hex="00", crc=chunk_crc(b"\0"))
        assert r["code"] == "offset"
        # the real upload, one chunk corrupted on the wire and resent
        ok = upload(link, data, corrupt_chunk=2)
        assert ok.type == "OK" and ok["sha"] == hashlib.sha256(data).hexdigest()
        ready = link.msg()
        assert ready.type == "READY" and ready["model"] == "ok"
        info = link.call("INFO")
        info_fields_match(info, new)
        assert target.read_bytes() == data


def test_reset_reboots(board, make_blob):
    with PtyBoard(make_blob("gru", "f32"), boot_banner=True) as b:
        link = b.open()
        assert link.msg().type == "READY"
        n_noise = len(link.noise)
        assert link.call("RESET").type == "OK"
        assert link.msg().type == "READY"
        assert len(link.noise) > n_noise


def test_flash_image_partition(board, make_blob, tmp_path):
    blob = make_blob("transformer", "int8").read_bytes()
    image = bytearray(b"\xff" * (4 << 20))
    image[0x110000:0x110000 + len(blob)] = blob
    path = tmp_path / "flash.bin"
    path.write_bytes(bytes(image))
    with StdioBoard("--flash-image", str(path), "--offset", "0x110000") as b:
        link = b.link
        assert link.msg()["model"] == "ok"
        assert link.call("INFO").int("blob_size") == len(blob)
        new = make_blob("gru", "f32")
        assert upload(link, new.read_bytes()).type == "OK"
        assert link.msg()["model"] == "ok"
    img = path.read_bytes()
    assert len(img) == 4 << 20
    assert img[0x110000:0x110000 + new.stat().st_size] == new.read_bytes()
    tail = len(blob) - new.stat().st_size
    assert img[0x110000 + new.stat().st_size:0x110000 + len(blob)] == b"\xff" * tail


def test_empty_and_bad_partitions(board, make_blob, tmp_path):
    with StdioBoard("--blob", str(tmp_path / "missing.blob")) as b:
        assert b.link.msg()["model"] == "none"
        assert b.link.call("INFO")["code"] == "no_model"
        assert b.link.call("GEN", ids="1")["code"] == "no_model"
    import struct
    import zlib
    # a `11` pair in a 2-bit (format 1.x) wq, a byte over 242 in a base-3 (2.0) one: bad even with a
    # fixed-up CRC
    for per_byte, value, words in [(4, 0xFF, b"ternary code 11"), (5, 243, b"base-3 byte over 242")]:
        data = bytearray(make_blob("transformer", "ternary", per_byte=per_byte).read_bytes())
        off = struct.unpack_from("<I", data, 128 + 32 * 2 + 20)[0]
        data[off + 4] = value
        struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
        bad = tmp_path / "bad.blob"
        bad.write_bytes(bytes(data))
        with StdioBoard("--blob", str(bad)) as b:
            assert b.link.msg()["model"] == "bad"
            err = b.link.call("INFO")
            assert err["code"] == "no_model" and words in bytes.fromhex(err["hex"])


def test_small_ram_is_reported(board, stories_blob):
    with StdioBoard("--blob", str(stories_blob("f32")), "--ram", "100000") as b:
        assert b.link.msg()["model"] == "bad"
        err = b.link.call("INFO")
        assert b"more RAM" in bytes.fromhex(err["hex"])
