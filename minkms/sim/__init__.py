"""
A deterministic, seeded simulator of whole clusters: the real Raft core
with the register store or the real KMS state machine, over a simulated
network, disk and clock.

  - L{minkms.sim.simulation}: one run (faults, workload, checks); replay a
    run with C{python -m minkms.sim --seed S --nodes N}.
  - L{minkms.sim.node}: the simulated server, driving the core as the
    Twisted node does (persist, fsync, send, apply, advance).
  - L{minkms.sim.network}, L{minkms.sim.disk}, L{minkms.sim.clock}: the
    simulated world.
  - L{minkms.sim.checker}, L{minkms.sim.history}: the properties checked
    and the client history they are checked on.
  - L{minkms.sim.statemachine}: the state-machine protocol and a register
    store; L{minkms.sim.kmsmachine} drives the real KMS state machine,
    checked against L{minkms.sim.kmsmodel}; L{minkms.sim.machines} names
    them.
  - L{minkms.sim.figure8}: a scripted nemesis that reaches Raft's
    figure-8 situation.
  - L{minkms.sim.harness}: a hand-driven cluster for unit tests.
"""
