"""KD-NAS: search space, reward, controller, proxy distillation and the episode runner."""
