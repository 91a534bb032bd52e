"""Hardware abstraction: chip profiles, the fixed-point compiler, device programs and devices.

The pipeline is visible in the modules: `profiles` (what a chip can do) → `compiler` (model spec +
float weights → `program.Program`) → `device` (one `Device` interface, backends chosen by URI:
`sim` in `sim.py`, the emulator and serial boards elsewhere). The integer arithmetic of every profile
is defined in docs/fixed_point.md and implemented as pure functions in `fixed_point.py`; the binary
program layout in docs/program_format.md. `deploy.py` runs a dataset through a device next to the
float model; `nir_graph.py` exports/imports NIR graphs.
"""
