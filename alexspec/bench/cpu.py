"""Compiler speed on this machine, no GPU involved (`alexspec bench --cpu-figures`): the wall time of
`alexspec report` in a fresh process, the compiler's import time (and that it imports no torch),
validate + infer of a generated 1,000-layer spec."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time


def cpu_figures(repeats: int = 5) -> dict:
    """Compiler speed on this machine (no GPU involved)."""
    report = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "alexspec", "report", "alexnet"], capture_output=True, check=True)
        report.append(time.perf_counter() - start)
    code = ("import time; t = time.perf_counter(); import alexspec.spec, alexspec.infer, alexspec.report; "
            "import sys; print(time.perf_counter() - t, 'torch' in sys.modules)")
    imports = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        imports.append(float(out[0]))
        torch_imported = out[1] == "True"
    from alexspec.spec import analyse, load_text
    import yaml

    layers = [{"name": f"conv{i}", "type": "conv", "out": 8, "kernel": 3, "padding": 1, "activation": "relu"}
              for i in range(999)] + [{"name": "flatten", "type": "flatten"}]
    text = yaml.safe_dump({"alexspec": 1, "name": "deep", "input": {"channels": 8, "height": 8, "width": 8},
                           "layers": layers})
    deep = []
    for _ in range(repeats):
        start = time.perf_counter()
        analyse(load_text(text, "deep.yaml"))
        deep.append(time.perf_counter() - start)
    return {"report_wall_s": round(statistics.median(report), 3),
            "compiler_import_s": round(statistics.median(imports), 3), "compiler_imports_torch": torch_imported,
            "validate_infer_1000_layers_s": round(statistics.median(deep), 3)}
