"""
The fault suite: real server processes on loopback, a seeded nemesis, a
concurrent workload of kms-go-like clients and a checker of the history
they recorded (issue 10).
"""
