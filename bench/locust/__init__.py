"""Locust load scenarios against a real ``pubex serve`` (``make load``); see run.py."""
