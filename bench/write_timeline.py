"""
Where a single write's time goes, read off the system calls of a real
3-node cluster: no change to the server, no timestamps of its own.

One writer sends KEY:CREATE to the leader of a fresh 3-node cluster while
C{perf trace} records the sends, receives and log writes
(C{pwritev2}) of the three servers and of the writer.  Each socket is
matched to the process at its other end (C{/proc/net/tcp} and
C{/proc/PID/fd}), so every event is known as "the leader received from
the writer", "follower 2 sent to the leader" and so on.  A write starts
when the writer sends its request; the table gives, for each step of its
serial path, the median (and quartiles) of the time since that start,
with the followers ordered by when they answered.  Needs C{perf} and the
right to trace (root, or C{kernel.perf_event_paranoid} low enough);
tracing slows the servers a little.

    .venv/bin/python bench/write_timeline.py [--seconds 5] [--no-leases]
"""

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from write_path import Cluster, machine_line, write_loops  # noqa: E402  (bench/ is the script directory)

TRACED = "recvfrom,sendto,pwritev2,read,write"

_CALL = re.compile(r"^\s*([\d.]+) \(\s*([\d.]*)\s*(?:ms)?\): \S+/(\d+) (\w+)\((.*)$")
_RESUMED = re.compile(r"^\s*([\d.]+) \(\s*([\d.]+) ms\): \S+/(\d+)\s+\.\.\. \[continued\]: (\w+)\(\)\)\s+= (-?\d+)")
_FD = re.compile(r"fd: (\d+)")
_RETURN = re.compile(r"=\s+(-?\d+)")


def _tcp_ends() -> dict[int, tuple[str, str]]:
    """Socket inode -> (local, remote) address of every IPv4 TCP socket of the machine."""
    ends = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            ends[int(fields[9])] = (fields[1], fields[2])
    return ends


def _socket_fds(pid: int) -> dict[int, int]:
    """Socket inode -> file descriptor, for the sockets of process C{pid}."""
    found = {}
    directory = f"/proc/{pid}/fd"
    for name in os.listdir(directory):
        try:
            target = os.readlink(os.path.join(directory, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            found[int(target[8:-1])] = int(name)
    return found


def peers_by_fd(pids: list[int]) -> dict[tuple[int, int], int]:
    """(pid, fd) -> the pid at the other end of that connection, for connections among C{pids}."""
    ends = _tcp_ends()
    owner = {}
    fds = {}
    for pid in pids:
        for inode, fd in _socket_fds(pid).items():
            owner[inode] = pid
            fds[inode] = (pid, fd)
    by_address = {ends[inode]: inode for inode in owner if inode in ends}
    peers = {}
    for (local, remote), inode in by_address.items():
        other = by_address.get((remote, local))
        if other is not None:
            peers[fds[inode]] = owner[other]
    return peers


def parse_trace(lines) -> list[tuple[float, float, int, str, int, int]]:
    """
    C{perf trace -T} output -> (start ms, end ms, pid, call, fd, result),
    sorted by start, a call split across lines (C{...} then
    C{[continued]}) joined into one.
    """
    events = []
    pending = {}
    for line in lines:
        resumed = _RESUMED.match(line)
        if resumed:
            start, duration, tid, call, result = resumed.groups()
            fd = pending.pop((int(tid), call), None)
            if fd is not None:
                events.append((float(start), float(start) + float(duration), int(tid), call, fd, int(result)))
            continue
        match = _CALL.match(line)
        if not match:
            continue
        start, duration, tid, call, rest = match.groups()
        fd_match = _FD.match(rest)
        fd = int(fd_match.group(1)) if fd_match else -1
        if rest.rstrip().endswith("..."):
            pending[(int(tid), call)] = fd
            continue
        result = _RETURN.search(rest)
        if result is None or not duration:
            continue
        events.append((float(start), float(start) + float(duration), int(tid), call, fd, int(result.group(1))))
    events.sort()
    return events


def _threads(pids: list[int]) -> dict[int, int]:
    """Thread id -> process id, for every thread of C{pids} (a node writes large batches on a thread)."""
    found = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            found[int(tid)] = pid
    return found


def timelines(events, peers: dict[tuple[int, int], int], writer: int, leader: int, followers: list[int]) -> dict:
    """
    Step name -> the µs since its write's request left the writer, one
    value per write whose whole path was found.  C{events} name their
    process, not their thread.
    """
    sends, receives = ("sendto", "write"), ("recvfrom", "read")
    writes: list[list] = []
    for event in events:
        start, end, pid, call, fd, result = event
        if call in receives and result <= 0:
            continue
        to = peers.get((pid, fd))
        if pid == writer and call in sends and to == leader:
            writes.append([event])
        elif writes:
            writes[-1].append(event)

    def first(trail, pid, calls, other, after):
        for start, end, p, call, fd, _ in trail:
            if p == pid and call in calls and start >= after and (other is None or peers.get((p, fd)) in other):
                return start, end
        return None

    def last(trail, pid, calls, other, before):
        found = None
        for start, end, p, call, fd, _ in trail:
            if start >= before:
                break
            if p == pid and call in calls and peers.get((p, fd)) in other:
                found = start, end
        return found

    steps = collections.defaultdict(list)
    for trail in writes:
        t0 = trail[0][0]
        request = first(trail, leader, receives, (writer,), t0)
        if request is None:
            continue
        sent = first(trail, leader, sends, followers, request[0])
        own = first(trail, leader, ("pwritev2",), None, request[0])
        answer = first(trail, leader, sends, (writer,), request[0])
        back = first(trail, writer, receives, (leader,), request[0])
        paths = []
        for follower in followers:
            wrote = first(trail, follower, ("pwritev2",), None, request[0])
            got = wrote and last(trail, follower, receives, (leader,), wrote[0])
            replied = wrote and first(trail, follower, sends, (leader,), wrote[1])
            heard = replied and first(trail, leader, receives, (follower,), replied[0])
            if got and wrote and replied and heard:
                paths.append((replied[0], got, wrote, replied, heard))
        if not (sent and own and answer and back) or len(paths) != len(followers):
            continue

        def us(t, t0=t0):
            return (t - t0) * 1000

        steps["the leader has the request"].append(us(request[1]))
        steps["its first Append leaves"].append(us(sent[0]))
        steps["its own log write starts"].append(us(own[0]))
        steps["its own log write ends"].append(us(own[1]))
        for n, (_, got, wrote, replied, heard) in enumerate(sorted(paths), 1):
            steps[f"follower answering {n}: has the Append"].append(us(got[1]))
            steps[f"follower answering {n}: log write starts"].append(us(wrote[0]))
            steps[f"follower answering {n}: log write ends"].append(us(wrote[1]))
            steps[f"follower answering {n}: answer leaves"].append(us(replied[0]))
            steps[f"the leader has answer {n}"].append(us(heard[1]))
        steps["the reply leaves the leader"].append(us(answer[0]))
        steps["the writer has the reply"].append(us(back[1]))
    return steps


def perf_problem() -> str | None:
    """Why C{perf} cannot trace system calls here, or None when it can."""
    perf = shutil.which("perf")
    if perf is None:
        return "perf is not installed (it records the system calls)"
    probe = subprocess.run([perf, "trace", "-e", "getpid", "--", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "cannot trace system calls: " + (probe.stderr.strip().splitlines() or ["perf trace failed"])[0]
    return None


async def _run(reactor, args, perf: str) -> None:
    print(machine_line())
    leases = "leases on" if args.leases else "read leases off"
    print(f"1 writer, KEY:CREATE to the leader of a 3-node cluster ({leases}), {args.seconds:g} s traced")
    with tempfile.TemporaryDirectory(prefix="minkms-timeline-") as workdir:
        cluster = Cluster(reactor, 3, workdir, leases=args.leases)
        try:
            await cluster.form()
            leader_host = cluster.hosts[0]
            await write_loops(reactor, cluster.client, leader_host, 1, 1.0, "warm")
            pids = [process.pid for process in cluster.processes]
            peers = peers_by_fd(pids + [os.getpid()])
            out = os.path.join(workdir, "trace.txt")
            tracer = subprocess.Popen(
                [perf, "trace", "-T", "-e", TRACED, "-o", out, "-p", ",".join(map(str, pids + [os.getpid()]))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await task.deferLater(reactor, 0.5, lambda: None)
            started = time.perf_counter()
            latencies = await write_loops(reactor, cluster.client, leader_host, 1, args.seconds, "traced")
            elapsed = time.perf_counter() - started
            threads = _threads(pids + [os.getpid()])
            tracer.terminate()
            while tracer.poll() is None:
                await task.deferLater(reactor, 0.05, lambda: None)
            with open(out, errors="replace") as f:
                events = [(s, e, threads.get(tid, tid), c, fd, r) for s, e, tid, c, fd, r in parse_trace(f)]
        finally:
            await cluster.stop()
    steps = timelines(events, peers, os.getpid(), pids[0], pids[1:])
    found = len(steps.get("the writer has the reply", []))
    print(f"{len(latencies)} writes in {elapsed:.1f} s while traced; the whole path found for {found}")
    if not found:
        raise SystemExit("write_timeline.py: no write's path was found in the trace")
    print("\n| step (µs since the request left the writer) | p25 | p50 | p75 |\n|---|---:|---:|---:|")
    for name, values in sorted(steps.items(), key=lambda item: statistics.median(item[1])):
        q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        print(f"| {name} | {q1:,.0f} | {q2:,.0f} | {q3:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-leases", dest="leases", action="store_false", help="read leases off on every node")
    args = parser.parse_args()
    problem = perf_problem()
    if problem is not None:
        raise SystemExit(f"write_timeline.py: {problem}")
    perf = shutil.which("perf")
    task.react(lambda reactor: defer.ensureDeferred(_run(reactor, args, perf)))


if __name__ == "__main__":
    main()
