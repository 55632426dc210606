"""Calibration on the CPU: a real tiny denoiser timed end to end, FLOPs of the full-size
UNets counted on the meta device, and the profile driving the simulator's cost model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from helpers import queue_scenario

from sim.calibration.bench import meta_flops
from sim.cli import main
from sim.fleet.cost import CostModel, load_profile
from sim.metrics.summary import summarize

# FLOPs per forward at batch 1 (matmul, conv, attention; torch.utils.flop_counter on the meta
# device), from ../shared/reference/diffusion_kernels.md.
REFERENCE_TFLOPS = {("sd15", 512): 0.803, ("sdxl", 1024): 6.761}


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "tiny.json"
    p = subprocess.run([sys.executable, "-m", "sim", "calibrate", "--model", "tiny-unet", "--device", "cpu",
                        "--repeats", "5", "--warmup", "1", "--batches", "1,2,4", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last == {"profile": str(out), "device": last["device"], "entries": 9}
    return out


def test_calibration_writes_a_valid_profile(tiny_profile):
    prof = load_profile(tiny_profile)
    comps = {(e["component"], e["batch"]) for e in prof["entries"]}
    assert comps == {(c, b) for c in ("denoise_step", "vae_decode", "text_encode") for b in (1, 2, 4)}
    step = [e for e in prof["entries"] if e["component"] == "denoise_step"]
    assert all(e["flops"] > 0 and e["latency_s"]["n"] == 5 for e in step)
    assert all(e["latency_s"]["p10"] <= e["latency_s"]["median"] <= e["latency_s"]["p90"] for e in step)
    mo = prof["measured_on"]
    assert mo["torch"] and mo["peak_tflops"] > 0 and "calibrate" in prof["command"]
    assert tiny_profile.with_suffix(".md").read_text().count("| tiny-unet |") == 9


def test_cost_model_is_monotone_in_batch_and_steps(tiny_profile):
    prof = load_profile(tiny_profile)
    cm = CostModel.from_profile(prof, str(tiny_profile), "tiny-unet", None, 20, 16)
    times = [cm.batch_time(b) for b in range(1, 17)]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))
    assert all(cm.batch_time(4, s + 1) > cm.batch_time(4, s) for s in range(1, 40))


def test_profile_drives_the_simulator(tiny_profile, tmp_path):
    def run_with(profile_path):
        d = queue_scenario(0.2, 1.0, 2, 600, seed=3)  # light load: latency ~ service time
        d["fleet"]["pools"][0] = {"name": "cpu", "gpus": 2, "profile": str(profile_path),
                                  "max_batch": 4, "max_wait_s": 0.05, "steps": 4}
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(d))
        out = tmp_path / (path.stem + "_out")
        assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
        return json.loads((out / "summary.json").read_text())

    a = run_with(tiny_profile)
    slow = json.loads(tiny_profile.read_text())
    for e in slow["entries"]:
        for q in ("median", "p10", "p90"):
            e["latency_s"][q] *= 3
    slow_path = tmp_path / "slow.json"
    slow_path.write_text(json.dumps(slow))
    b = run_with(slow_path)
    assert a["fleet"]["pools"]["cpu"]["cost_model"].startswith("tiny:tiny-unet")
    assert b["tiers"]["a"]["latency_s"]["p50"] > 2 * a["tiers"]["a"]["latency_s"]["p50"]
    assert b["fleet"]["utilization_mean"] > a["fleet"]["utilization_mean"]
    _ = summarize


@pytest.mark.parametrize("model,res", sorted(REFERENCE_TFLOPS))
def test_full_size_flops_match_the_reference(model, res):
    tflops = meta_flops(model, 1, res, cfg=False) / 1e12
    assert tflops == pytest.approx(REFERENCE_TFLOPS[(model, res)], rel=0.01)
    assert meta_flops(model, 1, res, cfg=True) == pytest.approx(2 * tflops * 1e12, rel=1e-6)


def test_profiles_lists_the_shipped_ones(capsys, root):
    assert main(["profiles", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = {r["profile"] for r in rows}
    assert {"placeholder-sdxl-h100", "cpu-tiny", "cpu-sd15-small"} <= names
    ph = next(r for r in rows if r["profile"] == "placeholder-sdxl-h100")
    assert ph["placeholder"] and 1.5 < ph["images_per_s"] < 2.5
    assert not next(r for r in rows if r["profile"] == "cpu-tiny")["placeholder"]


def test_bad_calibration_input_is_one_line(tmp_path):
    for args, expect in [
        (["--model", "nope"], "error: --model: nope: unknown model"),
        (["--out", str(tmp_path / "no" / "p.json")], "does not exist"),
        (["--device", "tpu"], "error: --device: tpu: use cpu or cuda"),
    ]:
        p = subprocess.run([sys.executable, "-m", "sim", "calibrate", *args], capture_output=True, text=True)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and expect in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    d = queue_scenario(1.0, 1.0, 1, 100)
    d["fleet"]["pools"][0] = {"name": "p", "gpus": 1, "profile": str(bad)}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    p = subprocess.run([sys.executable, "-m", "sim", "run", str(tmp_path / "s.yaml")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == f"error: {bad}: line 1: not valid JSON: Expecting property name enclosed in double quotes"
