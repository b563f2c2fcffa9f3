"""measure.py — run one command, bounded, and report its wall time and peak RSS as JSON.

Usage: python3 -I -S bench/measure.py TIMEOUT_S LOG -- /ABSOLUTE/PATH/OF/COMMAND [ARG...]
Prints {"rc": exit code or -signal, "seconds": wall time, "cpu_seconds": user + system CPU,
"maxrss_kib": peak RSS, "timed_out": bool} on stdout;
the command's stdout and stderr go to LOG, its stdin is /dev/null.

Why a separate, tiny process: Linux keeps a process's peak RSS across exec (the `ru_maxrss` that
wait4 returns is the larger of the exec'ing image's high-water mark and the new program's).
Spawned straight from bench.py, which holds the corpus generator's memory, every command
would report at least bench.py's RSS (27 MiB was seen for /bin/false). This script starts
bare (-I -S, few imports) and forks, so the floor is a few MiB; bench.py measures that floor
with /bin/true and prints it under the table. /usr/bin/time has the same floor problem at ~1 MiB
but is not installed everywhere.
"""
import os
import sys
import time

# Every module loaded before the fork raises the floor the child inherits: select and signal
# (cheap C modules) are imported after it, and the result line is formatted by hand, not by json.


def main():
    timeout, log, sep, argv = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    # An absolute path: os.execvp's PATH search runs Python code in the child and adds ~1 MiB.
    assert sep == "--" and argv and argv[0].startswith("/"), __doc__
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    import select
    import signal

    # A pidfd makes the wait bounded without the risk of signalling a recycled pid.
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    timed_out = not poller.poll(int(timeout * 1000))
    if timed_out:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - start
    print(f'{{"rc": {os.waitstatus_to_exitcode(status)}, "seconds": {seconds:.6f}, '
          f'"cpu_seconds": {usage.ru_utime + usage.ru_stime:.6f}, '
          f'"maxrss_kib": {usage.ru_maxrss}, "timed_out": {str(timed_out).lower()}}}')


main()
