# The two Quick-start commands (`make demo`, `make test`) create everything they need in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint docs bench bench-publish bench-quality bench-archs bench-models bench-tiling bench-report bench-label-issues clean

install: $(STAMP)

$(STAMP): shared/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# A venv's bundled pip (23.x on Python 3.11) fails to resolve these extras (InconsistentCandidate).
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade 'pip>=26'
	$(BIN)/pip install --quiet --disable-pip-version-check -e 'shared[test,server]'
	touch $@

# The main job: train a detector from scratch on the demo data (CPU is fine), outputs in demo/outputs;
# 20% of the images are held out, and the validation mAP is theirs.
demo: $(STAMP)
	$(BIN)/trainkit demo-data demo --images 300 --force
	DATASTORE_NAME=demo_datastore $(BIN)/trainkit validate --imageset demo/imageset --labelset demo/labels.csv \
		--min-confidence 0.5 --val-fraction 0.2 --json demo/validate.json
	rm -rf demo/outputs
	DATASTORE_NAME=demo_datastore $(BIN)/trainkit train --trainer trainers/skeleton \
		--imageset demo/imageset --labelset demo/labels.csv --min-confidence 0.5 --val-fraction 0.2 \
		--output-dir demo/outputs --set epochs=20 --set batch_size=8 --set image_size=192 --register-as demo-detector

lint: $(STAMP)
	$(BIN)/ruff check shared tests benchmarks trainers ci
	$(BIN)/ruff format --check shared tests benchmarks trainers ci

test: lint
	$(BIN)/pytest

# The reference documentation (docs/) as a site in site/; `make test` builds it too, strictly.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow and not container"

bench: $(STAMP)
	$(BIN)/python benchmarks/parse_labels.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/harness.py
	$(BIN)/python benchmarks/predict.py
	$(BIN)/python benchmarks/large_images.py

bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py

# Every arch and family: from scratch, transfer from demo data, from COCO where cached (docs/models.md)
bench-archs: $(STAMP)
	$(BIN)/python benchmarks/quality.py --archs

# Every arch and family: parameters, CPU speed, torch against onnxruntime (docs/models.md)
bench-models: $(STAMP)
	$(BIN)/python benchmarks/models.py

# The dataset checks and report on 10,000 images against validate alone (docs/know-your-data.md)
bench-report: $(STAMP)
	$(BIN)/python benchmarks/dataset_report.py

# The label-error finder on the demo data with 10% of its labels corrupted (docs/know-your-data.md)
bench-label-issues: $(STAMP)
	$(BIN)/python benchmarks/label_issues.py

bench-tiling: $(STAMP)
	$(BIN)/python benchmarks/tiling.py --seeds 0 1

bench-publish: $(STAMP)
	$(BIN)/python benchmarks/publish.py --vm

clean:
	rm -rf $(VENV) demo site .pytest_cache .ruff_cache
