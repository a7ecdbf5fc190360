"""Downstream tasks on frozen features: sample assembly, head banks, runners, fine-tuning.

Task specifications are :class:`brainfm.config.TaskSpec` (the ``tasks:`` section of the config).
"""
