"""The latency model: a hardware profile (schema) and the predictor fitted on it."""
