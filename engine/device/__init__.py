"""The device link: serial transports, the protocol client, the virtual board, flashing."""
