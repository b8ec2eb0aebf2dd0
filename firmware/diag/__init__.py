"""`pinkbutton-diag`: the field technician's tool, run on the kiosk itself.

`checks` turns what the hardware delivered into pass/fail results (pure, numpy), `selftest`
drives the HAL backend directly while the firmware is stopped, `network` makes one TLS + MQTT
round trip to the broker, `snapshot` saves a frame as PNG/JPEG, `control` is the running
firmware's local Unix control socket and `cli` the command line.
"""
