"""What a person at a terminal sees and does during a run: the progress display,
and Ctrl-C / SIGTERM turned into a polite stop.

Both are handed to `train.train(..., progress=Progress(), stop=stop)` by the
front door (the `tinygpt` command and the example scripts); the training loop
itself only writes lines and reads a flag.
"""

import signal
import sys


class Progress:
    """Log lines: a live single line on a terminal, plain lines otherwise.

    `step(text)` is a line that the next one may replace (the per-iteration log);
    `line(text)` is one that stays (evaluations, messages).
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self._live_line = False

    def step(self, text):
        if self.live:
            self.stream.write("\r" + text.ljust(100)[:150])
            self._live_line = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def line(self, text):
        self.finish()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self):
        """End a live line, so whatever is printed next starts on a line of its own."""
        if self._live_line:
            self.stream.write("\n")
            self.stream.flush()
            self._live_line = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()


class StopSignals:
    """Turn the first SIGINT/SIGTERM into a flag the loop checks between steps, so a
    checkpoint is never written halfway through a step. A second signal stops at once.

    `received` is None until a signal arrives, then its number. Use as a context
    manager: the previous handlers come back on leaving it.
    """

    def __init__(self):
        self.received = None

    def __enter__(self):
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

