#!/usr/bin/env python3
"""Runs a command in a new pseudo-terminal, as a user's terminal would.

Usage: pty-driver.py ROWS COLS RESIZE_ROWS RESIZE_COLS -- COMMAND...

The command gets a pseudo-terminal of ROWS x COLS as its stdin, stdout, stderr and controlling
terminal. What this process reads on stdin is typed into the terminal; what the command writes
there comes out on this process's stdout. On SIGUSR1 the terminal is resized to RESIZE_ROWS x
RESIZE_COLS (the command gets SIGWINCH, as from a window resize). Exits with the command's exit
code (128 + N when signal N ended it) once it exited and its output was read.
"""
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def main():
    separator = sys.argv.index("--")
    rows, cols, resize_rows, resize_cols = (int(value) for value in sys.argv[1:separator])
    command = sys.argv[separator + 1 :]
    primary, secondary = os.openpty()
    set_size(secondary, rows, cols)

    def take_terminal():
        # A new session whose controlling terminal is the pseudo-terminal (SIGWINCH reaches it).
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(command, stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True, preexec_fn=take_terminal)
    os.close(secondary)
    signal.signal(signal.SIGUSR1, lambda *_: set_size(primary, resize_rows, resize_cols))

    inputs = [primary, sys.stdin.fileno()]
    while True:
        try:
            readable, _, _ = select.select(inputs, [], [], 0.1)
        except InterruptedError:
            continue
        if primary in readable:
            try:
                data = os.read(primary, 65536)
            except OSError:
                data = b""
            if not data:
                break
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        if sys.stdin.fileno() in readable:
            data = os.read(sys.stdin.fileno(), 65536)
            if data:
                os.write(primary, data)
            else:
                inputs.remove(sys.stdin.fileno())
    code = child.wait()
    sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
