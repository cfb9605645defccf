"""Widgets shared by the screens: each posts messages named for what happened; screens decide."""
