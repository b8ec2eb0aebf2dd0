"""Test and measurement harness: broker process, throttling proxy, demo, benchmarks, soak.

Not installed and never shipped to a control room: it runs from a checkout.
"""
