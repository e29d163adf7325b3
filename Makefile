# The two entry points of the README. Both set up .venv/ first (idempotent).
PY := .venv/bin/python

.PHONY: setup demo test

setup:
	bash tools/setup/setup_env.sh

# Main job: pre-train a tiny EVA backbone, train a tiny EVA Cascade Mask R-CNN on
# the generated demo set on CPU, evaluate COCO AP and draw predictions.
demo: setup
	$(PY) tools/demo/run_demo.py --work-dir work_dirs/demo

test: setup
	$(PY) -m pytest -q tests
