# Two commands for users: `make demo` and `make test`. Each installs into .venv when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo_out
JOBS ?= 2

.PHONY: install demo test bench docs lint package clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU wheel of torch first, so no dependency pulls a CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[asr,corpus,serve,scale,test]"
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
	$(BIN)/python benchmarks/audit_calibration.py
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
	$(BIN)/mypy src

# sdist and wheel into dist/, checked; the wheel alone (base dependencies, no torch) installed
# into a fresh environment must run the CLI and an audit of a CSV
PKG_VENV := build/package-venv
package: $(STAMP)
	$(BIN)/python -m pip install --quiet "build>=1.0" "twine>=5.0"
	rm -rf dist $(PKG_VENV)
	$(BIN)/python -m build --outdir dist
	$(BIN)/twine check --strict dist/*
	$(PY) -m venv $(PKG_VENV)
	$(PKG_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PKG_VENV)/bin/python -m pip install --quiet dist/*.whl
	$(PKG_VENV)/bin/fairstream --help
	$(PKG_VENV)/bin/fairstream audit --help >/dev/null
	$(PKG_VENV)/bin/python -c "import sys, fairstream.audit; assert 'torch' not in sys.modules"
	$(PKG_VENV)/bin/python -c "from fairstream.audit.synthetic import make_synthetic_audit as m; \
	    d = m(n_speakers=60); d.results.to_csv('$(PKG_VENV)/results.csv', index=False); \
	    d.speakers.to_csv('$(PKG_VENV)/speakers.csv', index=False)"
	$(PKG_VENV)/bin/fairstream audit --results $(PKG_VENV)/results.csv \
	    --speakers $(PKG_VENV)/speakers.csv --n-boot 100 --no-progress --out $(PKG_VENV)/audit

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build dist
