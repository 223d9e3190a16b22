# Two commands for users: `make demo` and `make test`. Each installs into .venv when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo_out
JOBS ?= 2

.PHONY: install demo test bench docs lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU wheel of torch first, so no dependency pulls a CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fairstream demo --out $(DEMO_DIR) --jobs $(JOBS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# after `make demo`: the streaming and speaker benchmarks use its trained models
bench: $(STAMP)
	$(BIN)/python benchmarks/rnnt_loss.py
	$(BIN)/python benchmarks/streaming.py --checkpoint $(DEMO_DIR)/exp/averaged.pt \
	    --corpus $(DEMO_DIR)/corpus --beam 8 --lm $(DEMO_DIR)/exp/lm.json
	$(BIN)/python benchmarks/audit_scale.py
	$(BIN)/python benchmarks/sv.py --corpus $(DEMO_DIR)/corpus --checkpoint $(DEMO_DIR)/sv/final.pt
	$(BIN)/python benchmarks/corpus_synthesis.py
	$(BIN)/python benchmarks/data_pipeline.py --corpus $(DEMO_DIR)/corpus --limit 1000

# the documentation site (docs/, mkdocs.yml) into site/; --strict makes a broken link an error
docs:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import mkdocs" 2>/dev/null || $(BIN)/python -m pip install --quiet "mkdocs>=1.5"
	$(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
