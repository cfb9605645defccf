"""engine.train.kernels: every kernel choice computes the same loss, gradients and AdamW step; the
calibration cache is keyed by machine and shape; a failed calibration falls back to the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.config.schema import ExperimentConfig
from engine.models import build_model
from engine.train import kernels as K


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: these are maths and logic tests, and two spinning OpenMP threads crawl on a
    machine whose other core is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(seq_len: int = 40) -> ExperimentConfig:
    cfg = ExperimentConfig()
    m = cfg.model
    m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.seq_len = 32, 2, 4, 2, seq_len
    cfg.tokenizer.vocab_size = 64
    cfg.train.batch_size = 2
    return cfg


ALL = [K.Kernels(a, f, o, loss) for a in K.ATTENTION for f in K.FFN for o in K.OPTIMIZER
       for loss in K.LOSS]


def one_step(kernels: K.Kernels, lora: bool = False) -> tuple[float, list[torch.Tensor],
                                                               list[torch.Tensor]]:
    """Loss, gradients and weights after one AdamW step from the same start, with these kernels."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build_model(cfg)
    if lora:
        from engine.models.lora import apply_lora
        apply_lora(model, rank=4)
        for p in model.parameters():  # adapters start at zero: make B non-zero so it matters
            if p.requires_grad and p.dim() == 2 and p.abs().sum() == 0:
                p.data.normal_(0, 0.02)
    K.apply(model, kernels)
    x = torch.randint(0, 64, (3, 37), generator=torch.Generator().manual_seed(1))  # 37: not a block
    y = torch.roll(x, -1, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = K.adamw(params, cfg, kernels, "cpu")
    _, loss = model(x, y)
    loss.backward()
    grads = [p.grad.clone() for p in params]
    opt.step()
    return loss.item(), grads, [p.detach().clone() for p in params]


@pytest.mark.parametrize("lora", [False, True])
def test_every_kernel_choice_gives_the_same_loss_gradients_and_step(lora: bool,
                                                                   native_attention_kernel) -> None:
    ref_loss, ref_grads, ref_weights = one_step(K.DEFAULT, lora)
    for k in ALL:
        loss, grads, weights = one_step(k, lora)
        assert loss == pytest.approx(ref_loss, rel=1e-6), k
        for a, b in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4, msg=k.label())
        # atol: a gradient near AdamW's eps (1e-8) turns a summation-order difference of ~1 %
        # into ~0.4 % of lr in its first update (2e-6 seen for the chunked loss)
        for a, b in zip(weights, ref_weights, strict=True):
            torch.testing.assert_close(a, b, atol=5e-6, rtol=1e-5, msg=k.label())
    assert {k.attention for k in ALL} == {"blocked", "sdpa", "native"}
    assert {k.loss for k in ALL} == set(K.LOSS)


def test_apply_sets_the_model_switches_and_ignores_a_gru() -> None:
    model = build_model(tiny_cfg())
    K.apply(model, K.Kernels("sdpa", "fused", "loop", "chunked"))
    assert all(layer.attention.kernel == "sdpa" and layer.feed_forward.fused for layer in model.layers)
    assert model.loss_kernel == "chunked"
    K.apply(model, K.Kernels("blocked", "split", "fused"))
    assert all(layer.attention.kernel == "blocked" and not layer.feed_forward.fused
               for layer in model.layers)
    assert model.loss_kernel == "full"
    gru = tiny_cfg()
    gru.model.arch = "gru"
    K.apply(build_model(gru), K.Kernels("sdpa"))  # nothing to switch, no error
    assert K.optimizer_flags(K.Kernels(optimizer="foreach"), "cpu") == {"fused": False,
                                                                         "foreach": True}
    assert K.optimizer_flags(K.Kernels(optimizer="loop"), "cuda") == {"fused": True}


def test_key_changes_with_machine_torch_threads_and_shape() -> None:
    cfg = tiny_cfg()
    base = K.calibration_key(cfg, 2, "2.13.0", cpu="AMD EPYC")
    assert base == K.calibration_key(cfg, 2, "2.13.0", cpu="AMD EPYC")
    other = tiny_cfg(seq_len=64)
    variants = [K.calibration_key(cfg, 1, "2.13.0", cpu="AMD EPYC"),
                K.calibration_key(cfg, 2, "2.14.0", cpu="AMD EPYC"),
                K.calibration_key(cfg, 2, "2.13.0", cpu="Intel Xeon"),
                K.calibration_key(other, 2, "2.13.0", cpu="AMD EPYC")]
    assert all(K.key_string(v) != K.key_string(base) for v in variants)
    cfg.train.lr = 5.0  # not a kernel matter: same key
    assert K.calibration_key(cfg, 2, "2.13.0", cpu="AMD EPYC") == base


def test_a_new_native_kernel_source_measures_again(tmp_path: Path, monkeypatch) -> None:
    """A cached "native" choice names a build of one source: after an update of the source the
    old build is gone, so the cached choice must not be reused (it would run SDPA)."""
    from engine.models import native_attention

    base = K.calibration_key(tiny_cfg(), 2, "2.13.0", cpu="AMD EPYC")
    changed = tmp_path / "native_attention.cpp"
    changed.write_text(native_attention.SOURCE.read_text() + "\n// a change\n")
    monkeypatch.setattr(native_attention, "SOURCE", changed)
    assert K.calibration_key(tiny_cfg(), 2, "2.13.0", cpu="AMD EPYC") != base


def test_first_start_measures_and_caches_later_starts_read_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / K.CACHE_FILE
    cfg = tiny_cfg()
    first = K.choose(cfg, cache, threads=1, device_kind="cpu", budget_s=0.5, max_load=1e9)
    assert first.source == "measured", first.reason
    K.check(first.kernels)
    # the native kernel races only where it is loaded: a 0.5-s calibration never builds it
    from engine.models import native_attention
    raced = {"blocked", "sdpa"} | ({"native"} if native_attention.available() else set())
    assert {r for r in first.rates if r.startswith("attention=")} == {
        f"attention={a} fwd+bwd/s" for a in raced}
    assert first.kernels.compiled_attention in raced & set(K.COMPILED_ATTENTION)
    assert {r for r in first.rates if r.startswith("ffn=")} == {f"ffn={f} tok/s" for f in K.FFN}
    assert {r for r in first.rates if r.startswith("loss=")} == {f"loss={n} tok/s" for n in K.LOSS}
    assert all(v > 0 for v in first.rates.values())
    again = K.choose(cfg, cache, threads=1, device_kind="cpu")
    assert again.source == "cache" and again.kernels == first.kernels and again.seconds == 0.0
    # another shape is another key: measured, and both stay in the file
    assert K.choose(tiny_cfg(seq_len=24), cache, threads=1, device_kind="cpu",
                    budget_s=0.2, max_load=1e9).source == "measured"
    assert len(K.read_cache(cache)) == 2
    assert K.choose(cfg, cache, threads=1, device_kind="cpu", force=True,
                    budget_s=0.2, max_load=1e9).source == "measured"
    assert K.clear(cache) == 2 and not cache.exists()
    # a busy machine: nothing measured (timings would be noise), the default is used, not cached
    busy = K.choose(cfg, cache, threads=1, device_kind="cpu", budget_s=0.2, max_load=-1.0)
    assert busy.source == "default" and busy.kernels == K.DEFAULT and "busy" in busy.reason
    assert not cache.exists()


def test_calibration_never_fails_a_run(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    cfg.tokenizer.vocab_size = 0  # random tokens cannot be drawn: the measurement raises
    cal = K.choose(cfg, tmp_path / K.CACHE_FILE, threads=1, device_kind="cpu", max_load=1e9)
    assert cal.kernels == K.DEFAULT and cal.source == "default"
    assert "calibration failed" in cal.reason and not (tmp_path / K.CACHE_FILE).exists()
    # an unwritable cache: the measured choice is still used, and the log says why it is not kept
    blocker = tmp_path / "file"
    blocker.write_text("")
    cal = K.choose(tiny_cfg(), blocker / "kernels.json", threads=1, device_kind="cpu",
                   budget_s=0.2, max_load=1e9)
    assert cal.source == "measured" and "not cached" in cal.reason
    # a damaged or older cache file is ignored, not an error
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert K.choose(tiny_cfg(), bad, threads=1, device_kind="cpu", budget_s=0.2,
                    max_load=1e9).source == "measured"
    bad.write_text(json.dumps({"version": 0, "entries": {}}))
    assert K.read_cache(bad) == {}


def test_no_measurement_where_the_kernels_do_not_apply(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    for kind, autocast in (("cuda", False), ("cpu", True)):
        cal = K.choose(cfg, tmp_path / "k.json", threads=1, device_kind=kind, autocast=autocast)
        assert cal.source == "default" and cal.kernels == K.DEFAULT
    gru = tiny_cfg()
    gru.model.arch = "gru"
    assert K.choose(gru, tmp_path / "k.json", threads=1, device_kind="cpu").source == "default"
    dist = K.choose(cfg, tmp_path / "k.json", threads=1, device_kind="cpu", allow_measure=False)
    assert dist.source == "default" and not (tmp_path / "k.json").exists()


def test_cli_lists_and_clears_the_measurements(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    cfg = tiny_cfg()
    key = K.calibration_key(cfg, 2, "2.13.0", cpu="Test CPU")
    K.store(tmp_path / K.CACHE_FILE, K.Calibration(K.Kernels("blocked", "fused", "fused",
                                                             compiled_attention="native"),
                                                   "measured", "test", key, {"x": 1.0}, 1.0))
    K.store_compile_verdict(tmp_path / K.CACHE_FILE, key, {"faster": True, "gain": 1.64})
    assert K.compile_verdict(tmp_path / K.CACHE_FILE, key)["gain"] == 1.64
    shown = run_cli(tmp_path, "kernels")
    assert shown.returncode == 0, shown.stderr
    assert "blocked, compiled native" in shown.stdout
    assert "Test CPU" in shown.stdout and "32d x2 2x40" in shown.stdout
    assert "loss" in shown.stdout.splitlines()[0] and "full" in shown.stdout
    assert "on (1.64x)" in shown.stdout
    cleared = run_cli(tmp_path, "kernels", "--clear")
    assert cleared.returncode == 0 and "forgot 1" in cleared.stdout
    assert not (tmp_path / K.CACHE_FILE).exists()
    assert "no measurements yet" in run_cli(tmp_path, "kernels").stdout


# ---- the torch.compile trial ---------------------------------------------------------------------

def test_compile_trial_compiles_only_when_the_rest_of_the_run_pays_and_keeps_the_faster() -> None:
    from engine.train.compile_trial import CompileTrial

    def run(eager: float, compiled: float, remaining: float) -> tuple[list, CompileTrial]:
        trial, actions = CompileTrial(min_remaining_s=100.0), []
        for _ in range(5):  # 2 warm-up + 3 timed eager steps
            actions.append(trial.observe(eager, remaining))
        if trial.state == "compiling":
            actions.append(trial.observe(30.0, remaining))  # the step that compiles
            for _ in range(4):  # 1 warm-up + 3 timed compiled steps
                actions.append(trial.observe(compiled, remaining))
        return [a for a in actions if a], trial

    actions, trial = run(eager=1.0, compiled=0.6, remaining=1000)
    assert actions == ["compile", "keep"] and trial.record()["faster"] is True
    assert trial.record()["gain"] == pytest.approx(1 / 0.6, rel=1e-3) and trial.compile_s == 30.0
    actions, trial = run(eager=1.0, compiled=0.98, remaining=1000)  # < 5 % faster: not worth it
    assert actions == ["compile", "revert"] and trial.record()["faster"] is False
    actions, trial = run(eager=1.0, compiled=0.5, remaining=50)  # 50 s left: never compiled
    assert actions == ["skip"] and "not tried" in trial.reason


def test_a_run_tries_compile_on_its_own_steps_and_the_next_run_reads_the_verdict(
        tmp_path: Path) -> None:
    """The real path: a training subprocess (kernels measured, not TINYLM_KERNELS=default) with the
    payback threshold at 0 compiles after its eager steps, times both, records the verdict in
    meta.json and the workspace cache, and finishes; a second run at the same shape reads it."""
    import os
    import subprocess
    import sys

    from engine.config.presets import preset_config
    from engine.config.schema import apply_overrides
    from engine.store.experiments import Store
    from tests.conftest import REPO

    corpus = REPO / "corpora" / "tinystories_slice.txt"
    tiny = ["model.dim=32", "model.n_layers=1", "model.n_heads=4", "model.n_kv_heads=2",
            "model.seq_len=32", "tokenizer.vocab_size=384", "train.batch_size=4",
            "train.max_steps=14", "train.eval_every=14", "train.eval_batches=1",
            "train.ckpt_every=100", "train.log_every=7", "train.warmup_steps=2", "train.threads=1",
            "device.context_len=0", f"data.corpus={corpus}"]
    store = Store(tmp_path / "experiments")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TINYLM_COMPILE_MIN_S": "0",
           "TINYLM_KERNELS": "measure"}
    metas = []
    for name in ("first", "second"):
        exp = store.create(name, apply_overrides(preset_config("esp32-260k"), tiny))
        r = subprocess.run([sys.executable, "-m", "engine.train", str(exp.folder), "--workspace",
                            str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        metas.append(json.loads(exp.path("meta.json").read_text()))
        assert metas[-1]["status"] == "done" and metas[-1]["step"] == 14
    first, second = metas[0]["compile"], metas[1]["compile"]
    assert first["source"] == "measured" and first["compile_s"] > 0
    assert first["eager_s"] > 0 and first["compiled_s"] > 0
    assert first["faster"] == (first["gain"] >= 1.05)
    assert second["source"] == "cache" and second["gain"] == first["gain"]
    cached = K.read_cache(tmp_path / K.CACHE_FILE)
    assert [e["compile"]["gain"] for e in cached.values()] == [first["gain"]]
