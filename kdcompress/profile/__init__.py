"""Hardware profiling: timing blocks and encoders into a latency model with its own error."""
