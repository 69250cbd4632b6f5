"""A deterministic simulation of the whole controller (issue 20).

The real `Controller`, `LeaderElector`, `EventRecorder` and `KubeClient` run on a virtual-time
asyncio loop (`loop`) against an in-memory API (`api`) inside a seeded world of kubelets,
operators and faults (`world`); an oracle (`oracle`) judges every write the API applies.
`python -m noderecover_testkit.sim --help` runs seeds (`run`).
"""
