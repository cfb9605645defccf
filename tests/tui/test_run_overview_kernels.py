"""The Overview's meta table says which kernels a run trains with, and whether it runs compiled."""

from __future__ import annotations

from rich.console import Console

from tui.widgets.run_overview import meta_table


def rendered(meta: dict) -> str:
    console = Console(width=140, record=True)
    console.print(meta_table(meta, "running"))
    return console.export_text()


def test_kernels_row_names_the_choice_and_the_compile_verdict() -> None:
    meta = {"kernels": {"attention": "blocked", "ffn": "fused", "optimizer": "fused",
                        "loss": "chunked", "compiled_attention": "native", "source": "measured"},
            "compile": {"faster": True, "gain": 1.214}}
    text = rendered(meta)
    assert ("attention blocked · ffn fused · loss chunked · adamw fused · compiled 1.21x, "
            "attention native (measured)") in text
    meta["compile"] = {"faster": False, "gain": 0.95}
    assert "eager (compiled was 0.95x)" in rendered(meta)
    assert "kernels" not in rendered({"step": 3})  # a run that has not started: no row
