# Two entry points for a fresh clone: `make run` (the main job) and `make test`.
# Both create/refresh .venv first; the stamp makes that a no-op when nothing changed.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.wmrepair-installed
IOPAINT := iopaint==1.6.0
CORES   ?= 8

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@echo "Installing into $(VENV) (first time about 2 minutes)..."
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade "pip>=24"
	# A venv made before the FSR texture fill has plain opencv-python-headless: both packages write
	# cv2/, so remove both and let requirements.txt put back the contrib build alone.
	@if $(PY) -m pip show -q opencv-python-headless 2>/dev/null; then \
	  $(PY) -m pip uninstall -y -qq opencv-python-headless opencv-contrib-python-headless; fi
	$(PY) -m pip install -qq -r requirements.txt
	# IOPaint 1.6.0 pins Pillow==9.5.0 (CVEs), gradio, fastapi...: we only use its
	# in-process ModelManager, so install it without its pins (see README).
	$(PY) -m pip install -qq --no-deps $(IOPAINT)
	$(PY) -m pip install -qq --no-deps -e .
	$(PY) -m wmrepair doctor
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --resources gpu=1
	@echo "Done. Report: results/report/report.html  Metrics: results/eval/metrics.json  Repaired: results/repair/images/"

test: $(STAMP)
	$(VENV)/bin/ruff check src tests workflow benchmarks
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) -m wmrepair bench all

clean:
	rm -rf results logs .snakemake
