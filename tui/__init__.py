"""tinylm-tui: the Textual front end. It knows engine/, never torch internals."""
