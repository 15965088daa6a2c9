"""Workflows: definitions (YAML files, or the Python canvas) that become runs of jobs in storage.

Runs themselves, and every transition of their steps, live behind the storage seam
(``relay.storage.base.Workflows``); this package only builds what a run starts with.
"""
