"""The sections of scripts/bench, one module each (assemble, build, size,
registry), and what they share (common). Run them through scripts/bench:
it picks the venv and puts this package and the checkout on sys.path."""
