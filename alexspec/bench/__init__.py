"""`alexspec bench`: run (a spec timed against the PyTorch baselines), baselines (which, and how
figures compare), startup (spec to warm module, cold and warm), profile (where a step's time
goes), cpu (the compiler's own speed), history (`--history`), results (the JSON)."""
