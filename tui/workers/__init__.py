"""Long-lived readers (files, serial, subprocesses): each owns a stop Event and posts messages."""
