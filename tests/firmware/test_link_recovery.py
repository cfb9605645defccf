"""A generation whose @END line never arrives (cut by a log line on a shared UART, a bad cable): the
link asks the board @STATE and ends with the board's numbers instead of waiting out its deadline.
The virtual board's --drop-end N loses every N-th END line."""

from __future__ import annotations

from engine.device.link import DeviceLink, GenerationSummary, TokenEvent
from engine.device.virtual import VirtualBoard


def test_lost_end_is_recovered_by_asking_the_board(board, stories_blob):
    with VirtualBoard(stories_blob("int8"), extra=["--drop-end", "1"]) as vb, \
            DeviceLink(vb.port, timeout=60) as link:
        link.wait_ready()
        events = list(link.generate(prompt_ids=[1, 403, 407], max_tokens=6, temperature=0))
        toks = [e for e in events if isinstance(e, TokenEvent)]
        summary = events[-1]
        assert isinstance(summary, GenerationSummary)  # not a DeviceError after 60 s
        assert summary.tokens == len(toks) == 6 and summary.reason == "max" and summary.us > 0
        # the board is idle and answers the next generation (whose END is lost too)
        again = list(link.generate(prompt_ids=[1, 403], max_tokens=2, temperature=0))
        assert again[-1].tokens == 2


def test_state_reports_a_running_generation(board, stories_blob):
    with VirtualBoard(stories_blob("int8"), us_per_token=50_000) as vb, \
            DeviceLink(vb.port, timeout=30) as link:
        link.wait_ready()
        gen = link.generate(prompt_ids=[1, 403], max_tokens=200, temperature=0)
        first = next(gen)
        assert isinstance(first, TokenEvent)
        cmd = link.send("STATE")
        state = link.wait_for(("STATE",), cmd)
        assert state.fields["busy"] == "1" and state.fields["model"] == "ok"
        assert 1 <= state.int("n") < 200
        gen.close()  # stops the board
        cmd = link.send("STATE")
        state = link.wait_for(("STATE",), cmd)
        assert state.fields["busy"] == "0" and state.fields["reason"] == "stop"
