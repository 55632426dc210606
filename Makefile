PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean whatif plan validate

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

validate: install
	$(BIN)/floodgate validate scenarios/validation_small.yaml --json

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python benchmarks/sim_speed.py
	$(BIN)/python benchmarks/demand_speed.py
	$(BIN)/python benchmarks/policy_speed.py
	$(BIN)/python benchmarks/full_scale.py

clean:
	rm -rf $(VENV) out
