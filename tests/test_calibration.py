"""Calibration on the CPU: real tiny denoisers timed end to end, full-size FLOPs counted on the
meta device, the written profile loaded by the simulator, and the CLI's output and errors.
No timing assertions: CPU timings on a shared machine are noise."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import queue_scenario

from sim.fleet.cost import CostModel, load_profile

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sim.calibration.cli"]

# FLOPs per forward at batch 1 (matmul, conv and attention, torch.utils.flop_counter on the
# meta device): ../shared/reference/diffusion_kernels.md, table "FLOPs per forward".
# SD 1.5 UNet: 64x64 latent (512^2 image), 77 tokens. SDXL UNet: 128x128 latent (1024^2).
REFERENCE_TFLOPS = {("sd15", 512): 0.803, ("sdxl", 1024): 6.761}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The command of the issue, as is (20 repeats, batches 1, 2, 4)."""
    out = tmp_path_factory.mktemp("cal") / "tiny.json"
    p = _cli("calibrate", "--model", "tiny-unet", "--device", "cpu", "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    return out, p


def test_calibrate_prints_the_json_line_last(tiny_profile):
    out, p = tiny_profile
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(last) == {"profile", "device", "entries"}
    assert last["profile"] == str(out) and last["entries"] == 9 and "CPU" in last["device"]


def test_calibration_writes_a_valid_profile(tiny_profile):
    out, _ = tiny_profile
    prof = load_profile(out)
    assert not prof["placeholder"] and not prof["interrupted"]
    got = {(e["component"], e["batch"]) for e in prof["entries"]}
    assert got == {(c, b) for c in ("denoise_step", "vae_decode", "text_encode") for b in (1, 2, 4)}
    for e in prof["entries"]:
        lat = e["latency_s"]
        assert lat["n"] == 20 and 0 < lat["p10"] <= lat["median"] <= lat["p90"]
        assert e["flops"] > 0 and e["tflops"] > 0 and e["mfu"] > 0
        assert e["dtype"] == "fp32" and e["peak_mem_bytes"] is None  # no allocator peak on CPU
        assert e["cfg"] == (e["component"] == "denoise_step")
    step = {e["batch"]: e["flops"] for e in prof["entries"] if e["component"] == "denoise_step"}
    assert step[4] == pytest.approx(4 * step[1])  # FLOPs are linear in the batch
    mo = prof["measured_on"]
    assert mo["torch"] and mo["peak_tflops"] > 0 and mo["threads"] >= 1
    assert mo["copy_gb_s"] > 0 and "copies" in mo["copy_method"]  # memory roofline
    assert mo["repeats"] == 20 and mo["warmup"] == 3 and mo["dtype"] == "fp32"
    assert prof["command"].startswith("floodgate calibrate --model tiny-unet --device cpu")
    assert re.fullmatch(r"[0-9a-f]{16}", prof["models"]["tiny-unet"]["config_hash"])
    md = out.with_suffix(".md").read_text()
    assert md.count("| tiny-unet |") == 9
    assert not list(out.parent.glob(".*.tmp"))  # the atomic writes left no temporary file


def test_cost_model_is_monotone_in_batch_and_steps(tiny_profile):
    out, _ = tiny_profile
    prof = load_profile(out)
    for steps in (1, 20, 50):
        cm = CostModel.from_profile(prof, str(out), "tiny-unet", None, steps, 16)
        times = [cm.batch_time(b) for b in range(1, 17)]
        assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    cm = CostModel.from_profile(prof, str(out), "tiny-unet", None, 20, 16)
    for b in (1, 3, 4, 9):
        by_steps = [cm.batch_time(b, s) for s in range(1, 60)]
        assert all(x <= y for x, y in zip(by_steps, by_steps[1:], strict=False))


def test_the_simulator_runs_on_the_profile(tiny_profile):
    """Every batch takes exactly the profile's time for its size at 4 steps (deterministic
    service): the cost model in the run is the measured one."""
    from sim.engine import Run
    from sim.fleet import kernel as K
    from sim.fleet.cost import CostModel
    from sim.scenario import parse_scenario

    out, _ = tiny_profile
    d = queue_scenario(2.0, 1.0, 2, 300, seed=1)
    d["fleet"]["pools"][0] = {"name": "cpu", "gpus": 2, "profile": str(out), "model": "tiny-unet",
                              "max_batch": 4, "max_wait_s": 0.05, "steps": 4,
                              "service_distribution": "deterministic"}
    r = Run(parse_scenario(d), trace=True).execute()
    cost = CostModel.from_profile(load_profile(out), str(out), "tiny-unet", None, 4, 4)
    start, batch, sizes = {}, {}, {}
    for kind, i, t, a in r.trace_events:
        if kind == K.STARTED:
            start[i] = t
        elif kind == K.BATCH:
            sizes[(i, t)] = a
        elif kind == K.COMPLETED:
            batch[(a, start[i])] = t - start[i]
    assert len(batch) > 50 and {sizes[k] for k in batch} >= {1, 2}
    for (w, t0), dur in batch.items():
        assert dur == pytest.approx(cost.batch_time(sizes[(w, t0)], 4), rel=1e-9)


def test_every_tiny_architecture_runs_and_is_written(tmp_path):
    import torch

    from sim.calibration.configs import TINY
    from sim.calibration.profile import make_profile, write_profile
    from sim.calibration.runner import Settings, calibrate

    threads = torch.get_num_threads()
    try:
        res = calibrate(Settings(models=list(TINY), batches=[1, 2], repeats=3, warmup=3,
                                 threads=1, progress=False))
    finally:
        torch.set_num_threads(threads)
    assert not res.skipped and not res.interrupted
    assert {(e["model"], e["component"]) for e in res.entries} == {
        (m, c) for m in TINY for c in ("denoise_step", "vae_decode", "text_encode")}
    assert all(e["flops"] > 0 for e in res.entries)
    prof = make_profile("t", res.measured_on, "test", res.entries, res.models, res.skipped,
                        False, "now")
    path, _ = write_profile(tmp_path / "t.json", prof)
    assert len(load_profile(path)["entries"]) == len(res.entries) == 18


@pytest.mark.parametrize("model,res", sorted(REFERENCE_TFLOPS))
def test_full_size_flops_match_the_reference(model, res):
    from sim.calibration.flops import count_flops

    flops = count_flops(model, "denoise_step", 1, res, cfg=False)
    assert flops / 1e12 == pytest.approx(REFERENCE_TFLOPS[(model, res)], rel=0.01)
    # A CFG step runs the unconditional half in the same forward: twice the FLOPs.
    assert count_flops(model, "denoise_step", 1, res, cfg=True) == pytest.approx(2 * flops)


def test_ctrl_c_keeps_what_was_measured(tmp_path):
    out, err = tmp_path / "p.json", tmp_path / "err.txt"
    with err.open("w") as fe:
        p = subprocess.Popen(
            [*CLI, "calibrate", "--model", "tiny-unet,tiny-sdxl", "--repeats", "5",
             "--threads", "1", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=fe, text=True, cwd=ROOT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 120
        # Interrupt once the progress bar shows a configuration measured.
        while not re.search(r"\b[1-9]\d*/\d+ \[", err.read_text()):
            assert p.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        stdout, _ = p.communicate(timeout=120)
    assert p.returncode == 130, err.read_text()
    last = json.loads(stdout.strip().splitlines()[-1])
    prof = load_profile(out)
    assert prof["interrupted"] and 1 <= last["entries"] == len(prof["entries"]) < 12


def test_parser_does_not_import_torch():
    code = ("import sys; from sim.calibration.cli import main, add_parsers; "
            "import sim.calibration.listing; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr


def test_profiles_lists_the_shipped_ones(tmp_path):
    env = {**os.environ, "FLOODGATE_PROFILES": str(tmp_path)}
    p = subprocess.run([*CLI, "profiles", "--json"], capture_output=True, text=True, cwd=ROOT,
                       env=env)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout.strip().splitlines()[-1])
    shipped = {f.stem for f in (ROOT / "sim" / "data" / "profiles").glob("*.json")}
    assert {"cpu-tiny", "cpu-sd15-small"} <= shipped
    assert shipped <= {r["profile"] for r in rows}
    for r in rows:
        assert r["images_per_s"] > 0 and r["best_batch"] >= 1
        assert r["placeholder"] == r["profile"].startswith("placeholder")
    assert {r["model"] for r in rows if r["profile"] == "cpu-tiny"} == {
        "tiny-unet", "tiny-sdxl", "tiny-dit"}
    text = subprocess.run([*CLI, "profiles"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert text.returncode == 0 and "cpu-sd15-small" in text.stdout


def test_a_malformed_profile_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "floodgate.profile/1", "entries": [{"model": "x"}]}))
    for p in (
        _cli("profiles", str(bad)),
        subprocess.run([*CLI, "profiles"], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "FLOODGATE_PROFILES": str(tmp_path)}),
    ):
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr.strip() == f"error: {bad}: entries[0].component: missing"
    bad.write_text("{not json")
    p = _cli("profiles", str(bad))
    assert p.returncode == 2 and p.stderr.startswith(f"error: {bad}: line 1: not valid JSON")


@pytest.mark.parametrize("args,expect", [
    (["--model", "nope"], "error: --model: nope: unknown model; known: sd15"),
    (["--model", "tiny-unet", "--out", "/no/such/dir/p.json"], "error: --out: /no/such/dir/"),
    (["--model", "tiny-unet", "--device", "tpu"], "error: --device: tpu: unknown device"),
    (["--model", "tiny-unet", "--resolution", "100"], "error: --resolution: 100: tiny-unet"),
])
def test_bad_calibrate_input_is_one_error_line(args, expect):
    p = _cli("calibrate", *args)
    assert p.returncode == 2 and p.stderr.startswith(expect), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_shipped_gpu_profiles_are_measured_and_the_ghibli_fleet_uses_one():
    from sim.fleet.cost import find_profile
    from sim.scenario import load_scenario

    prof = load_profile(ROOT / "sim" / "data" / "profiles" / "h100-bf16.json")
    mo = prof["measured_on"]
    assert not prof.get("placeholder") and "H100" in mo["device"]
    assert mo["driver"] and mo["torch"] and mo["cuda"] and mo["peak_tflops"] > 100
    assert mo["copy_gb_s"] > 500  # HBM, not a host copy
    comps = {(e["model"], e["component"]) for e in prof["entries"]}
    for m in ("sd15", "sdxl", "sd3-medium"):
        assert {(m, "denoise_step"), (m, "vae_decode"), (m, "text_encode")} <= comps
    # FLOPs on the GPU are the meta-device counts: SDXL CFG step at batch 1 (reference: 13.52 T)
    sdxl1 = next(e for e in prof["entries"] if e["model"] == "sdxl"
                 and e["component"] == "denoise_step" and e["batch"] == 1)
    assert abs(sdxl1["flops"] / 13.52e12 - 1) < 0.01
    sc = load_scenario(str(ROOT / "scenarios" / "ghibli_2025.yaml"))
    pool = sc.fleet.pools[0]
    assert find_profile(pool.profile, ROOT / "scenarios").stem == "h100-bf16"


def test_the_h200_placeholder_is_the_h100_profile_at_the_same_round_mlperf_ratio():
    from sim.calibration.derive import MLPERF_SDXL_OFFLINE, h200
    from sim.calibration.listing import summarise

    path = ROOT / "sim" / "data" / "profiles" / "placeholder-sdxl-h200.json"
    shipped = load_profile(path)
    assert shipped == json.loads(json.dumps(h200()))  # regenerated, not edited by hand
    assert shipped["placeholder"] and "NOT MEASURED" in shipped["source"]
    assert "NOT MEASURED" in path.with_suffix(".md").read_text()
    fig = MLPERF_SDXL_OFFLINE["v4.0"]
    h1 = {r["best_batch"]: r for r in summarise(ROOT / "sim" / "data" / "profiles" / "h100-bf16.json")
          if r["model"] == "sdxl"}
    h2 = summarise(path)
    assert len(h2) == 1 and h2[0]["best_batch"] in h1
    ratio = h2[0]["images_per_s"] / h1[h2[0]["best_batch"]]["images_per_s"]
    assert ratio == pytest.approx(fig["H200"] / fig["H100"], rel=1e-4)
