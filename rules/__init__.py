"""Policy: the admin-settings.json `containersProxy` model, its validation and `Policy.decide`.

Knows nothing of sockets (see design.md).
"""
