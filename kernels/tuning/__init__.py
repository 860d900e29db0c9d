"""How the kernels pick their configs and implementations: autotuning (autotune.py), compiling a
step's kernels at once (ahead.py), the choices shipped per GPU model (pretuned.py and
gpu-choices/), Triton or cuDNN per conv shape (conv_choice.py), time spent timing
(stopwatch.py) and what a compiled binary asks of an SM (resources.py)."""
