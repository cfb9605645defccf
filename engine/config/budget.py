"""Will it fit? Parameter count, blob bytes per quant, and runtime RAM on a named board.

The RAM figure is the firmware's own arithmetic (firmware/BLOB.md "Runtime RAM"): weights stay in
flash and are read in place, RAM holds the activations, the KV cache, the sampler's scratch and the
protocol buffers. The firmware reports the same number at boot, and a test holds the two equal.

A chip's heap is not one pool: the plain ESP32's byte-addressable DRAM is four separate regions, so
the largest single allocation is far below the free total. The firmware takes the model's RAM as
three blocks (KV cache, activations, scratch: firmware/core/heap.h), largest first, each in one
piece; `place` does the same with each board's regions, so a verdict says "fits" only when the
chip's allocator can give every block.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from engine.errors import UserError

from .layout import layout, n_groups
from .schema import QUANT_METHODS, ExperimentConfig

KB = 1024


@dataclass(frozen=True)
class Region:
    """One contiguous heap region: the most a single allocation in it can get."""
    name: str
    bytes: int


@dataclass(frozen=True)
class Board:
    name: str
    regions: tuple[Region, ...]  # the heap the model may use, as the chip's allocator splits it
    flash_model_bytes: int  # size of the `model` partition the blob is flashed to
    note: str

    @property
    def ram_bytes(self) -> int:
        """Free heap in all regions together (what the RAM bar compares against)."""
        return sum(r.bytes for r in self.regions)

    @property
    def largest_block(self) -> int:
        return max(r.bytes for r in self.regions)

    def heap_arg(self) -> str:
        """The regions as the virtual board's --heap takes them (firmware/host/main.c)."""
        return ",".join(str(r.bytes) for r in self.regions)


# Heap regions: ESP-IDF v5 components/heap/port/<chip>/memory_layout.c gives each chip's 8-bit RAM
# regions; the free bytes are for this firmware (no Wi-Fi/BT) after static data and the boot-time
# allocations (task stacks, UART driver), in the allocator's search order, and a little under the
# region size for block headers. Where a region's start depends on the app (the first DRAM region,
# after .data/.bss and, on S3/C3, IRAM code) the figure is an estimate; INFO heap / heap_block on a
# board give the real numbers (tests/hardware checks the verdict against them).
#  esp32: DRAM 0x3FFB0000-0x3FFE0000 (192 KB less static data, task stacks: ~136 KB); D/IRAM
#    0x3FFE4350-0x40000000 (113,840 B: dumps in espressif/esp-idf#5783 and arduino-esp32#5346 show
#    a 113,792 B largest block there); 0x3FFE0440-0x3FFE3F20 (15,072 B); 0x3FFAE6E0-0x3FFB0000
#    (6,432 B). The IRAM regions are 32-bit only: no model block can use them.
#  esp32-s3: one D/IRAM region 0x3FC88000-0x3FCE9710 less IRAM code and static data (~256 KB; a
#    dump in RomanLut/hx-esp32-cam-fpv#46 shows 196,608 B free for a much bigger app), the region
#    after it (22,308 B, same dump) and RTC fast RAM (7,912 B, same dump); with 8 MB PSRAM
#    (N8R8 modules, CONFIG_SPIRAM) one more region of 8,257,536 B (largest block in that dump).
#  esp32-c3: blocks 4+5 0x3FC80000-0x3FCC0000 less IRAM code and static data (~144 KB) and block 9
#    0x3FCC0000-0x3FCE0000 (128 KB less the ROM's reserved top: ~118 KB), RTC fast RAM (~7 KB).
_ESP32_DRAM = (Region("DRAM", 136 * KB), Region("D/IRAM", 111 * KB), Region("D/IRAM 2", 14 * KB),
               Region("DRAM 0", 6 * KB))
_S3_SRAM = (Region("D/IRAM", 256 * KB), Region("DRAM top", 21 * KB), Region("RTC", 7 * KB))
BOARDS: dict[str, Board] = {
    "esp32": Board("esp32", _ESP32_DRAM, 0x2F0000,
                   "520 KB SRAM, ~267 KB free heap in 4 regions (largest ~136 KB); 4 MB flash, "
                   "2.9 MB model partition"),
    "esp32-s3": Board("esp32-s3", _S3_SRAM + (Region("PSRAM", 8_257_536),), 0x6F0000,
                      "512 KB SRAM + 8 MB PSRAM (N8R8 modules); 8 MB flash, 6.9 MB model partition"),
    "esp32-s3-nopsram": Board("esp32-s3-nopsram", _S3_SRAM, 0x6F0000,
                              "ESP32-S3 without PSRAM (N8 modules): ~284 KB free heap, largest "
                              "block ~256 KB; 8 MB flash, 6.9 MB model partition"),
    "esp32-c3": Board("esp32-c3", (Region("DRAM", 144 * KB), Region("DRAM block 9", 118 * KB),
                                   Region("RTC", 7 * KB)), 0x2F0000,
                      "400 KB SRAM, ~269 KB free heap in 3 regions (largest ~144 KB); 4 MB flash, "
                      "2.9 MB model partition"),
    "host": Board("host", (Region("heap", 1024 * 1024 * KB),), 64 * 1024 * KB,
                  "virtual board on this computer"),
}

# The RAM blocks the firmware allocates (firmware/core/engine.h TL_BLOCK_*), from runtime_ram parts.
BLOCKS: dict[str, tuple[str, ...]] = {
    "kv_cache": ("kv_cache",),
    "activations": ("activations",),
    "scratch": ("quant_scratch", "t2_tables", "sampler", "tokens"),
}


@dataclass(frozen=True)
class Placement:
    """Where the model's blocks went: `failed` is the first block no region could hold."""
    where: dict[str, str]  # block -> region name
    failed: str = ""
    needed: int = 0  # bytes of the failed block
    largest_left: int = 0  # the largest free block when it failed

    @property
    def ok(self) -> bool:
        return not self.failed


def blocks(ram: dict[str, int]) -> dict[str, int]:
    """runtime_ram's parts as the firmware's allocations (the io buffers are static, not heap)."""
    return {name: sum(ram[p] for p in parts) for name, parts in BLOCKS.items()}


def place(board: Board, ram: dict[str, int]) -> Placement:
    """The firmware's allocation order: blocks largest first (ties in BLOCKS order), each into the
    first region with room (ESP-IDF's heap_caps_malloc takes the regions in priority order)."""
    left = [r.bytes for r in board.regions]
    where: dict[str, str] = {}
    for name, size in sorted(blocks(ram).items(), key=lambda kv: -kv[1]):
        if size == 0:
            continue
        i = next((i for i, free in enumerate(left) if free >= size), None)
        if i is None:
            return Placement(where, name, size, max(left))
        left[i] -= size
        where[name] = board.regions[i].name
    return Placement(where)

IO_BUFFER_BYTES = 1024  # protocol line in + line out (firmware/PROTOCOL.md max line 512 bytes)
# ternary integer mode: 16 lookup tables of 172 int16 + 64 int64 row sums (firmware/core/kernels.h)
T2_TABLE_BYTES = 2 * 16 * 244 + 8 * 64  # 16 tables of 244 int16 (T3: 243 entries) + 64 int64


def param_count(cfg: ExperimentConfig) -> int:
    """Trainable parameters, counted like PyTorch's sum(p.numel()) (tied weights once, no RoPE)."""
    return sum(t.numel for t in layout(cfg, "f32").tensors if t.name != "rope")


def runtime_ram(cfg: ExperimentConfig, method: str | None = None,
                context_len: int | None = None) -> dict[str, int]:
    """Bytes of RAM the firmware allocates at init, by purpose (all f32 unless noted).

    With quant.int_attention (BLOB.md "Integer mode", int8/ternary transformers) the KV cache is
    int8 values plus one f32 scale per (position, kv head), and the attention scratch holds one
    head's ctx int32 entries instead of n_heads · ctx floats."""
    m = cfg.model
    method = method or cfg.quant.method
    vocab = cfg.tokenizer.vocab_size
    ctx = context_len or cfg.context_len()
    f = 4
    if m.arch == "transformer":
        hidden, kv_dim = m.ffn_dim(), m.kv_dim()
        int_mode = cfg.quant.int_attention and method != "f32"
        att = ctx if int_mode else m.n_heads * ctx
        activations = f * (4 * m.dim + 2 * hidden + att + vocab)  # x xb xb2 q, hb hb2, att, logits
        if int_mode:  # k and v: int8 [ctx, kv_dim] + f32 scale [ctx, n_kv_heads] per layer
            kv_cache = 2 * m.n_layers * ctx * (kv_dim + f * m.n_kv_heads)
        else:
            kv_cache = f * 2 * m.n_layers * ctx * kv_dim
        widest = max(m.dim, hidden)
    else:
        int_mode = False
        activations = f * (m.dim + m.n_layers * m.dim + 6 * m.dim + vocab)  # x, h per layer, gates
        kv_cache = 0
        widest = m.dim
    quant_scratch = 0
    if method != "f32":  # int8 activation vector + its scales for the integer kernels
        quant_scratch = widest + 4 * n_groups(widest, cfg.quant.group_size)
        quant_scratch = (quant_scratch + 3) // 4 * 4
    t2_tables = 0
    if m.arch == "transformer" and int_mode and method == "ternary":  # kernels.h TL_T2_SCRATCH_BYTES
        t2_tables = T2_TABLE_BYTES
    sampler = 8 * vocab  # (prob, index) pairs for top-k / top-p
    tokens = 4 * ctx  # prompt / generated token ids
    parts = {
        "activations": activations,
        "kv_cache": kv_cache,
        "quant_scratch": quant_scratch,
        "t2_tables": t2_tables,
        "sampler": sampler,
        "tokens": tokens,
        "io_buffers": IO_BUFFER_BYTES,
    }
    parts["total"] = sum(parts.values())
    return parts


@dataclass
class Budget:
    board: Board
    params: int
    blob_bytes: dict[str, int]  # per quant method
    ram: dict[str, int]  # breakdown for the configured method
    method: str
    context_len: int
    piece_bytes_estimated: bool
    advice: list[str] = field(default_factory=list)

    @property
    def ram_total(self) -> int:
        return self.ram["total"]

    @property
    def placement(self) -> Placement:
        return place(self.board, self.ram)

    @property
    def ram_over(self) -> int:
        """Bytes short: of the free total first, else of the largest free block for a block."""
        total_over = self.ram_total - self.board.ram_bytes
        if total_over > 0:
            return total_over
        p = self.placement
        return p.needed - p.largest_left if not p.ok else total_over

    @property
    def flash_over(self) -> int:
        return self.blob_bytes[self.method] - self.board.flash_model_bytes

    @property
    def fits(self) -> bool:
        return self.ram_over <= 0 and self.flash_over <= 0

    def verdict(self) -> str:
        if self.fits:
            ram_pct = 100 * self.ram_total / self.board.ram_bytes
            flash_pct = 100 * self.blob_bytes[self.method] / self.board.flash_model_bytes
            return (f"fits {self.board.name}: RAM {fmt_bytes(self.ram_total)} of "
                    f"{fmt_bytes(self.board.ram_bytes)} ({ram_pct:.0f}%), {self.method} blob "
                    f"{fmt_bytes(self.blob_bytes[self.method])} of "
                    f"{fmt_bytes(self.board.flash_model_bytes)} ({flash_pct:.0f}%)")
        parts = []
        p = self.placement
        if self.ram_total > self.board.ram_bytes:
            parts.append(f"RAM needs {fmt_bytes(self.ram_total)}, board has "
                         f"{fmt_bytes(self.board.ram_bytes)} ({fmt_bytes(self.ram_over)} over)")
        elif not p.ok:
            parts.append(f"largest block {fmt_bytes(p.largest_left)} < needed "
                         f"{fmt_bytes(p.needed)} ({p.failed.replace('_', ' ')}; "
                         f"{fmt_bytes(self.ram_over)} over)")
        if self.flash_over > 0:
            parts.append(f"{self.method} blob is {fmt_bytes(self.blob_bytes[self.method])}, model "
                         f"partition holds {fmt_bytes(self.board.flash_model_bytes)} "
                         f"({fmt_bytes(self.flash_over)} over)")
        return f"does not fit {self.board.name}: " + "; ".join(parts)


def fmt_bytes(n: int) -> str:
    if abs(n) < 10 * KB:
        return f"{n} B"
    if abs(n) < 10 * KB * KB:
        return f"{n / KB:.1f} KB"
    return f"{n / KB / KB:.2f} MB"


def board_named(name: str) -> Board:
    """The board called `name`, or a UserError listing the known ones (a typo is not a traceback)."""
    if name in BOARDS:
        return BOARDS[name]
    import difflib

    close = difflib.get_close_matches(name, list(BOARDS), n=1)
    tip = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown board {name!r}: {tip}the boards are {', '.join(BOARDS)} "
                    "(host = the virtual board on this computer)")


def compute(cfg: ExperimentConfig, board: str | None = None, piece_bytes: int | None = None) -> Budget:
    """The whole budget; `piece_bytes` is exact once the experiment has a tokenizer."""
    b = board_named(board or cfg.device.board)
    method = cfg.quant.method
    blobs = {q: layout(cfg, q, piece_bytes).total_bytes for q in QUANT_METHODS}
    result = Budget(b, param_count(cfg), blobs, runtime_ram(cfg, method), method, cfg.context_len(),
                    piece_bytes is None)
    result.advice = _advice(cfg, result, piece_bytes)
    return result


def _knobs(cfg: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """Single-knob changes a user could make, each a smaller config."""
    m = cfg.model
    out: list[tuple[str, ExperimentConfig]] = []
    ctx = cfg.context_len()
    if ctx >= 32:
        out.append((f"device.context_len {ctx} → {ctx // 2}",
                    replace(cfg, device=replace(cfg.device, context_len=ctx // 2))))
    if m.arch == "transformer":
        smaller = [k for k in range(1, m.n_kv_heads) if m.n_heads % k == 0]
        if smaller:
            k = max(smaller)
            out.append((f"model.n_kv_heads {m.n_kv_heads} → {k}",
                        replace(cfg, model=replace(m, n_kv_heads=k))))
        if m.dim >= 32 and (m.dim // 2) % m.n_heads == 0 and (m.dim // 2 // m.n_heads) % 2 == 0:
            out.append((f"model.dim {m.dim} → {m.dim // 2}",
                        replace(cfg, model=replace(m, dim=m.dim // 2, hidden_dim=m.hidden_dim // 2))))
    if m.n_layers > 1:
        out.append((f"model.n_layers {m.n_layers} → {m.n_layers - 1}",
                    replace(cfg, model=replace(m, n_layers=m.n_layers - 1))))
    if m.arch == "transformer" and cfg.quant.method != "f32" and not cfg.quant.int_attention:
        out.append(("quant.int_attention false → true (int8 KV cache)",
                    replace(cfg, quant=replace(cfg.quant, int_attention=True))))
    order = list(QUANT_METHODS)
    i = order.index(cfg.quant.method)
    if i + 1 < len(order):
        out.append((f"quant.method {cfg.quant.method} → {order[i + 1]}",
                    replace(cfg, quant=replace(cfg.quant, method=order[i + 1]))))
    return out


def _advice(cfg: ExperimentConfig, cur: Budget, piece_bytes: int | None) -> list[str]:
    """Rank knobs by how much of the overflow they remove (RAM and flash together)."""
    if cur.fits:
        return []
    over = max(cur.ram_over, 0) + max(cur.flash_over, 0)
    ranked = []
    for label, alt in _knobs(cfg):
        alt_budget = Budget(cur.board, 0, {}, runtime_ram(alt), alt.quant.method, 0, False)
        blob = layout(alt, alt.quant.method, piece_bytes).total_bytes
        new_over = max(alt_budget.ram_over, 0) + max(blob - cur.board.flash_model_bytes, 0)
        saved = over - new_over
        if saved > 0:
            ranked.append((saved, new_over == 0, label))
    ranked.sort(key=lambda r: (-r[0], r[2]))
    return [f"{label}: saves {fmt_bytes(saved)}" + (" — then it fits" if ok else "")
            for saved, ok, label in ranked]
