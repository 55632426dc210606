PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint clean whatif plan validate live-check optimize backtest schema chaos

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/floodgate run scenarios/ghibli_2025.yaml

whatif: install
	$(BIN)/floodgate compare scenarios/ghibli_2025.yaml \
	  $(foreach v,no_limits historical reserve_shed brownout autoscale,--variant $(v)=scenarios/ghibli_whatif/$(v).yaml)

plan: install
	$(BIN)/floodgate plan scenarios/ghibli_2025.yaml --window 144h:168h --warm 2h --without shed_reserve --json
	# the GPU mix over GPU types (the three regional H100 pools one type, split by their sizes as
	# above; A100 and H200 in americas, up to their max_gpus) x reserved, on demand, spot, on a 10%
	# cell in steps of 50 GPUs (README: 52 candidates x 2 replications, 15 min here at load 4-6;
	# steps of 100: 22 candidates, but the single type then lands 90 GPUs above plan's answer)
	$(BIN)/floodgate plan scenarios/ghibli_2025.yaml --window 144h:168h --warm 2h --without shed_reserve \
	  --mix --set cell_fraction=0.1 --step 50 --reps 2 --json --out out/ghibli_2025/plan_mix

# The Ghibli answer: free cap, free shed threshold and paid reserve at a fixed fleet (the three
# regional autoscalers, policies 2-4, off), judged over the free-opening day (hours 144-168) with paid SLOs as constraints. A 10%
# cell (100 GPUs: batches fill to 8 as in the service; a 1% cell does not, see cell_fraction)
# started 2 h before the window with an empty system (free users only arrive from hour 144).
GHIBLI_FIXED := $(foreach i,2 3 4,--set policies.$(i).enabled=false) --set cell_fraction=0.1 --set outputs.warmup_s=144h \
  --set horizon=168h --warm 2h \
  --constraint 'pro:p95<=30s' --constraint 'plus:p95<=60s' --objective free_goodput

# H100s per region (americas, europe, asia; the whole service)
GHIBLI_H100 = --set fleet.pools.h100-americas.gpus=$(1) --set fleet.pools.h100-europe.gpus=$(2) \
  --set fleet.pools.h100-asia.gpus=$(3)

optimize: install
	$(BIN)/floodgate optimize scenarios/ghibli_2025.yaml $(GHIBLI_FIXED) $(call GHIBLI_H100,560,480,560) \
	  --param policies.daily_quota.limit=1:30 --param policies.shed_reserve.utilization.free=0.6:1.0 \
	  --param policies.shed_reserve.predicted_wait_s.free=10:600:log --trials 16 --reps 2 --json
	# the free cap at 1,280, 1,600 and 1,920 H100s (a grid axis sets one path: a sweep per size)
	$(foreach n,448:384:448 560:480:560 672:576:672,$(BIN)/floodgate sweep scenarios/ghibli_2025.yaml \
	  $(GHIBLI_FIXED) $(call GHIBLI_H100,$(word 1,$(subst :, ,$(n))),$(word 2,$(subst :, ,$(n))),$(word 3,$(subst :, ,$(n)))) \
	  --grid policies.daily_quota.limit=3,10,30 --reps 1 --json --out out/ghibli_2025/sweep_$(subst :,_,$(n)) &&) true

validate: install
	$(BIN)/floodgate validate scenarios/validation_small.yaml --json
	$(BIN)/floodgate validate scenarios/validation_surge.yaml --json

# scripted faults against `floodgate serve --replicas N` on loopback (sim/live/chaos.py):
# a replica SIGKILLed, a GPU worker process SIGKILLed mid-batch, Redis stopped for 10 s (with a
# Redis store), SIGTERM to everything
chaos: install
	$(BIN)/python -m sim.live.chaos --out out/chaos

# every policy in scenarios/policies/ served live: serve + a short Locust replay each, checked
live-check: install
	$(BIN)/python -m sim.live.live_check

backtest: install
	$(BIN)/python benchmarks/nowcast_backtest.py --surges 50 --boot 10  # as measured in the README

lint: install
	$(BIN)/ruff check .

# after changing a scenario or policy model: the shipped schema (tests/test_check.py checks it)
schema: install
	$(BIN)/floodgate schema > floodgate.schema.json.tmp && mv floodgate.schema.json.tmp floodgate.schema.json

test: install lint
	$(BIN)/python -m pytest -q tests

test-fast: install lint  # the quick loop: no servers, Locust, notebooks, browser or torch
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: install
	$(BIN)/python benchmarks/sim_speed.py
	$(BIN)/python benchmarks/demand_speed.py
	$(BIN)/python benchmarks/policy_speed.py
	$(BIN)/python benchmarks/full_scale.py

clean:
	rm -rf $(VENV) out
