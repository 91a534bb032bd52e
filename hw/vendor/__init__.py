"""Vendor simulators as external checks of the device arithmetic (docs/vendor_checks.md).

`lava_env` creates the Python 3.10 side venv with lava-nc, `lava_runner` is the script that venv runs,
`lava` maps a `loihi` program onto it and aligns its traces with the `sim` device's; Lava never enters
spikeloop's own environment. `xylo` drives SynSense's xylosim in-process (the optional extra
`.[vendor]`) for the `xylo-imu` / `xylo-audio2` profiles. `devices` makes both `Device` backends
(URIs `lava`, `xylosim`); `lava.write_lava_net` and `xylo.write_xylo_spec` are the exporters behind
`spikeloop export --format lava | xylo`.
"""
