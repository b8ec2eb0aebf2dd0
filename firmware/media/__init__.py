"""Media pipeline: encoders (PyAV), pre-roll, envelopes, sending, bandwidth adaptation."""
