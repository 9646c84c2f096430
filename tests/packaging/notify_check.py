#!/usr/bin/env python3
"""What the unit relies on, checked without systemd: plays systemd's side of the sd_notify protocol.

Runs `logagent run` with NOTIFY_SOCKET and WATCHDOG_USEC set (etcd and Kafka unreachable: neither
is needed to start) and checks: READY=1, WATCHDOG=1 at about half the interval, SIGHUP with a changed
file applies log.level and names the keys that need a restart, SIGHUP with a broken file lists every
problem and keeps running, SIGTERM sends STOPPING=1 and exits 0.
Prints one "ok ..." or "FAIL ..." line per check; exits 1 if any failed.
Usage: notify_check.py /path/to/logagent
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

BASE = """\
[agent]
state_dir = "{state}"
ip = "127.0.0.1"
[log]
level = "{level}"
format = "json"
[etcd]
endpoints = ["127.0.0.1:1"]
[kafka]
brokers = ["127.0.0.1:1"]
linger_ms = {linger}
[shutdown]
grace_ms = 2000
[http]
listen = ""
"""

failed = 0


def report(ok, what):
    global failed
    print(("  ok   " if ok else "  FAIL ") + what)
    failed += 0 if ok else 1


def messages(sock, until):
    """Datagrams received before `until` (monotonic seconds)."""
    out = []
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return out
        sock.settimeout(left)
        try:
            out.append(sock.recv(4096).decode())
        except socket.timeout:
            return out


def wait_for(sock, wanted, timeout):
    seen = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = messages(sock, min(end, time.monotonic() + 0.2))
        seen += got
        if any(wanted in m.split("\n") for m in got):
            return True, seen
    return False, seen


def wait_log(path, needle, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(path, encoding="utf-8", errors="replace") as f:
            if needle in f.read():
                return True
        time.sleep(0.1)
    return False


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "logagent.toml")
        state = os.path.join(tmp, "state")
        log = os.path.join(tmp, "agent.log")
        os.mkdir(state)
        with open(conf, "w") as f:
            f.write(BASE.format(state=state, level="info", linger=5))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(tmp, "notify"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAGENT_") and k != "RUST_LOG"}
        env.update(NOTIFY_SOCKET=os.path.join(tmp, "notify"), WATCHDOG_USEC="400000")
        with open(log, "w") as logf:
            # systemd sets WATCHDOG_PID to the service's pid, and the agent only pings if it is its own.
            cmd = ["sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" "$@"', binary, "run", "--config", conf]
            agent = subprocess.Popen(cmd, env=env, stdout=logf, stderr=logf)
        try:
            ok, _ = wait_for(sock, "READY=1", 15)
            report(ok, "READY=1 after start")
            pings = [m for m in messages(sock, time.monotonic() + 1.3) if "WATCHDOG=1" in m.split("\n")]
            # 400 ms watchdog -> a ping every 200 ms: about 6 in 1.3 s.
            report(4 <= len(pings) <= 9, f"WATCHDOG=1 every WATCHDOG_USEC/2 ({len(pings)} pings in 1.3 s)")

            with open(conf, "w") as f:
                f.write(BASE.format(state=state, level="debug", linger=20))
            agent.send_signal(signal.SIGHUP)
            report(wait_log(log, "configuration reloaded: applied", 5), "SIGHUP applies log.level")
            report(wait_log(log, "kafka.linger_ms", 1), "SIGHUP names kafka.linger_ms as needing a restart")

            with open(conf, "w") as f:
                f.write(BASE.format(state="relative/dir", level="debug", linger=20).replace("grace_ms = 2000", "grace_ms = 0"))
            agent.send_signal(signal.SIGHUP)
            report(wait_log(log, "configuration not reloaded", 5), "SIGHUP with a broken file keeps running")
            with open(log, encoding="utf-8", errors="replace") as f:
                text = f.read()
            report("agent.state_dir" in text and "shutdown.grace_ms" in text, "every problem of the broken file logged")
            report(agent.poll() is None, "agent still running after the rejected reload")

            agent.send_signal(signal.SIGTERM)
            ok, _ = wait_for(sock, "STOPPING=1", 10)
            report(ok, "STOPPING=1 on SIGTERM")
            try:
                code = agent.wait(20)
            except subprocess.TimeoutExpired:
                code = None
            report(code == 0, f"exit code 0 after SIGTERM (got {code})")
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            if failed:
                with open(log, encoding="utf-8", errors="replace") as f:
                    print("  --- agent log (last 40 lines) ---")
                    print("".join(f.readlines()[-40:]))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
