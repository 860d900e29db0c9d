"""The ops as nn layers with a backend switch (layers.py) and the paper's towers over devices (towers.py)."""
