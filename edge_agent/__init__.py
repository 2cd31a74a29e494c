"""The on-device runtime: validate sensor readings, window them, infer with a small int8 model,
decide locally and escalate what the device is unsure about. Needs no torch."""
