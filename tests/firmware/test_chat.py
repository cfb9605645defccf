"""The three-way chat against the real virtual board (real C, real protocol over a pty)
with the shipped demo-260k experiment: the board must say exactly what the reference
says, the turn is recorded, a board holding another model is refused before anything is
generated."""

from __future__ import annotations

import io
import json
import shutil
import time

import pytest

from engine.chat.threeway import ChatEvent, chat_turn
from engine.chat.transcript import read_turns
from engine.cli.main import main
from engine.config.workspace import load_workspace
from engine.device.link import DeviceLink
from engine.device.virtual import VirtualBoard
from engine.errors import UserError
from engine.infer.sample import SamplingParams
from engine.store.experiments import Store
from tests.conftest import LLAMA2C, REPO, run_cli

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace holding a copy of demo-260k with its int8 and f32 blobs exported."""
    from engine.blob.export import export

    root = tmp_path_factory.mktemp("chatws")
    shutil.copytree(REPO / "experiments" / "demo-260k", root / "experiments" / "demo")
    exp = Store(root / "experiments").load("demo")
    for quant in ("int8", "f32"):
        export(exp, quant, force=True)
    return root


def load(ws):
    return Store(ws / "experiments").load("demo")


def blob(ws, quant):
    return ws / "experiments" / "demo" / f"model.{quant}.bin"


def test_greedy_turn_fills_three_streams_device_equals_reference_and_is_recorded(ws):
    exp = load(ws)
    events: list[ChatEvent] = []
    before = len(read_turns(exp))
    params = SamplingParams(temperature=0, max_tokens=32)
    r = chat_turn(exp, load_workspace(ws), PROMPT, params, quant="int8", port="virtual",
                  on_event=events.append)

    for name in ("torch", "reference", "device"):
        s = r.streams[name]
        assert len(s.ids) == 32 and s.reason == "max", (name, s.reason)
        mine = [e for e in events if e.stream == name]
        assert [e.index for e in mine] == list(range(32))  # streamed, in order
        assert [e.token for e in mine] == s.ids
        assert "".join(e.text for e in mine) == s.text and len(s.text) > 40
        assert s.first_token_s is not None and s.tok_per_s and s.tok_per_s > 0
    assert r.streams["device"].ids == r.streams["reference"].ids
    assert r.divergence is None and not r.greedy_mismatch and not r.stopped
    assert r.streams["device"].board_us > 0

    turns = read_turns(exp)
    assert len(turns) == before + 1 and r.transcript is not None
    assert r.transcript.parent == exp.path("chats") and r.transcript.suffix == ".jsonl"
    t = turns[-1]
    assert t["prompt"] == PROMPT and t["quant"] == "int8" and t["port"] == "virtual"
    assert t["blob_sha256"] == exp.meta["blobs"]["int8"]["sha256"]
    assert t["params"]["temperature"] == 0 and t["params"]["max_tokens"] == 32
    assert t["divergence"] is None and t["greedy_mismatch"] is False
    for name in ("torch", "reference", "device"):
        rec = t["streams"][name]
        assert rec["ids"] == r.streams[name].ids and rec["text"] == r.streams[name].text
        assert rec["ttft_ms"] > 0 and rec["ms_per_token"] > 0


def test_sampled_turns_on_a_long_lived_link_match_the_reference_bit_for_bit(ws):
    exp = load(ws)
    texts = []
    with VirtualBoard(blob=blob(ws, "int8")) as vb, DeviceLink(vb.port) as link:
        for seed in (7, 8):
            params = SamplingParams(temperature=0.8, top_p=0.9, seed=seed,
                                    max_tokens=40)
            r = chat_turn(exp, load_workspace(ws), PROMPT, params, quant="int8",
                          link=link, record=False)
            assert r.streams["device"].ids == r.streams["reference"].ids
            assert len(r.streams["device"].ids) > 10 and r.divergence is None
            texts.append(r.streams["device"].text)
    assert texts[0] != texts[1]  # the seed reached the board's sampler


def transcript_lines(ws) -> int:
    chats = ws / "experiments" / "demo" / "chats"
    return sum(len(p.read_bytes().splitlines()) for p in chats.glob("*.jsonl"))


@pytest.mark.parametrize("held, says", [("f32", "runs the f32 blob of 'demo'"),
                                        ("stories260K", "another model")])
def test_a_board_holding_another_model_is_refused_with_the_flash_command(
        ws, stories_blob, held, says):
    path = stories_blob("int8") if held == "stories260K" else blob(ws, held)
    before = transcript_lines(ws)
    with VirtualBoard(blob=path) as vb:
        r = run_cli(ws, "chat", "demo", "--quant", "int8", "--port", vb.port,
                    "--prompt", "Hi", "--temperature", "0")
    assert r.returncode == 2, r.stderr
    assert f"`tinylm flash demo --quant int8 --port {vb.port}`" in r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
    assert transcript_lines(ws) == before


def test_a_tokenizer_that_is_not_the_checkpoints_is_refused(ws, tmp_path):
    folder = tmp_path / "experiments" / "demo"
    shutil.copytree(ws / "experiments" / "demo", folder,
                    ignore=shutil.ignore_patterns("chats"))
    # the same vocabulary size, other pieces
    shutil.copy(LLAMA2C / "tok512.model", folder / "tokenizer.model")
    exp = Store(tmp_path / "experiments").load("demo")
    with pytest.raises(UserError) as e:
        chat_turn(exp, load_workspace(tmp_path), PROMPT, SamplingParams(),
                  port="virtual")
    from engine.data.tokenizer import load_tokenizer
    from engine.store.ckpt_fields import checkpoint_fields

    ours = load_tokenizer(folder, exp.config.tokenizer).sha256
    trained = checkpoint_fields(folder / "ckpt.pt")["tokenizer_sha256"]
    assert ours in str(e.value) and trained in str(e.value) and ours != trained
    assert not (folder / "chats").exists()


def test_checkpoint_fields_without_torch_match_torch_load(ws):
    from engine.store.checkpoint import load_checkpoint
    from engine.store.ckpt_fields import checkpoint_fields

    path = ws / "experiments" / "demo" / "ckpt.pt"
    full = load_checkpoint(path)
    fields = checkpoint_fields(path)
    assert fields["tokenizer_sha256"] == full["tokenizer_sha256"]
    assert fields["step"] == 600
    assert {k: full[k] for k in fields} == fields
    assert "model" not in fields and "config" not in fields  # only plain values


def test_should_stop_ends_all_three_streams_and_the_board_stays_usable(ws):
    exp = load(ws)
    events: list[ChatEvent] = []
    stop_at: list[float] = []

    def should_stop() -> bool:
        if not stop_at and sum(e.stream == "device" for e in events) >= 2:
            stop_at.append(time.monotonic())
        return bool(stop_at)

    params = SamplingParams(temperature=0, max_tokens=120)
    # 20 ms a token, like a slow ESP32: the whole generation would take 2.4 s
    with VirtualBoard(blob=blob(ws, "int8"), us_per_token=20_000) as vb, \
            DeviceLink(vb.port) as link:
        r = chat_turn(exp, load_workspace(ws), PROMPT, params, quant="int8", link=link,
                      on_event=events.append, should_stop=should_stop)
        ended = time.monotonic()
        assert r.stopped and ended - stop_at[0] < 1.5
        for name, s in r.streams.items():
            assert s.reason == "stop" and len(s.ids) < 60, (name, s.reason, len(s.ids))
        assert r.divergence is None  # what both said before the stop is the same
        assert read_turns(exp)[-1]["stopped"] is True
        short = SamplingParams(temperature=0, max_tokens=4)
        again = chat_turn(exp, load_workspace(ws), PROMPT, short, quant="int8",
                          link=link, record=False)
        assert again.streams["device"].ids == again.streams["reference"].ids
        assert len(again.streams["device"].ids) == 4  # no @ERR busy: the board is idle


def test_cli_chat_prints_three_blocks_the_report_and_the_transcript(ws, capsys):
    code = main(["-w", str(ws), "chat", "demo", "--port", "virtual", "--prompt", PROMPT,
                 "--temperature", "0", "--max-tokens", "24"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    for name in ("torch", "reference", "device"):
        header = next(ln for ln in lines if ln.startswith(name + " "))
        assert "24 tokens" in header and "ms/token" in header and "tok/s" in header
    assert "device = reference for all 24 tokens" in out
    path = out.split("transcript: ")[1].splitlines()[0]
    last = json.loads(open(path).read().splitlines()[-1])
    assert last["streams"]["device"]["tokens"] == 24


def test_cli_chat_interactive_answers_each_prompt_until_eof(ws, capsys, monkeypatch):
    exp = load(ws)
    before = len(read_turns(exp))
    monkeypatch.setattr("sys.stdin", io.StringIO("Once upon a time\nThe dog\n"))
    code = main(["-w", str(ws), "chat", "demo", "--port", "virtual", "--interactive",
                 "--temperature", "0.8", "--seed", "3", "--max-tokens", "12"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("device = reference for all 12 tokens") == 2
    prompts = [t["prompt"] for t in read_turns(exp)[before:]]
    assert prompts == ["Once upon a time", "The dog"]
