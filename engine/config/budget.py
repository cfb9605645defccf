"""Will it fit? Parameter count, blob bytes per quant, and runtime RAM on a named board.

The RAM figure is the firmware's own arithmetic (firmware/BLOB.md "Runtime RAM"): weights stay in
flash and are read in place, RAM holds the activations, the KV cache, the sampler's scratch and the
protocol buffers. The firmware reports the same number at boot, and a test holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from engine.errors import UserError

from .layout import layout, n_groups
from .schema import QUANT_METHODS, ExperimentConfig

KB = 1024


@dataclass(frozen=True)
class Board:
    name: str
    ram_bytes: int  # heap the model may use
    flash_model_bytes: int  # size of the `model` partition the blob is flashed to
    note: str


# Heap figures are what an ESP-IDF app typically has free after boot with Wi-Fi off; the model
# partition sizes are those of firmware/esp32/partitions*.csv.
BOARDS: dict[str, Board] = {
    "esp32": Board("esp32", 300 * KB, 0x2F0000,
                   "520 KB SRAM, ~300 KB free heap after boot; 4 MB flash, 2.9 MB model partition"),
    "esp32-s3": Board("esp32-s3", 300 * KB + 8 * 1024 * KB, 0x6F0000,
                      "512 KB SRAM + 8 MB PSRAM (N8R8 modules); 8 MB flash, 6.9 MB model partition"),
    "esp32-c3": Board("esp32-c3", 280 * KB, 0x2F0000,
                      "400 KB SRAM, ~280 KB free heap after boot; 4 MB flash, 2.9 MB model partition"),
    "host": Board("host", 1024 * 1024 * KB, 64 * 1024 * KB, "virtual board on this computer"),
}

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
    def ram_over(self) -> int:
        return self.ram_total - self.board.ram_bytes

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
        if self.ram_over > 0:
            parts.append(f"RAM needs {fmt_bytes(self.ram_total)}, board has "
                         f"{fmt_bytes(self.board.ram_bytes)} ({fmt_bytes(self.ram_over)} over)")
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
        ram = runtime_ram(alt)["total"]
        blob = layout(alt, alt.quant.method, piece_bytes).total_bytes
        new_over = max(ram - cur.board.ram_bytes, 0) + max(blob - cur.board.flash_model_bytes, 0)
        saved = over - new_over
        if saved > 0:
            ranked.append((saved, new_over == 0, label))
    ranked.sort(key=lambda r: (-r[0], r[2]))
    return [f"{label}: saves {fmt_bytes(saved)}" + (" — then it fits" if ok else "")
            for saved, ok, label in ranked]
