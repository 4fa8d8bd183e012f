"""The bottom layer: value types, the error root, durable files; nothing else of peermesh."""
