# Sourced by tools/dist_launch.sh and tools/slurm_launch.sh with ROOT set to the
# checkout: PYTHON, unless set, is the checkout's .venv/bin/python (what
# `make setup` installs) where it exists, else python from PATH.
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then
        PYTHON="$ROOT/.venv/bin/python"
    else
        PYTHON=python
    fi
fi
