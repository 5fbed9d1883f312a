"""Simulation drivers of the core: arrival processes, workload streams and the discrete-event simulator."""
