"""Policy: the admin-settings.json `containersProxy` model, its validation and `Policy.decide`.

Knows nothing of sockets: `pac/` is below it, `proxy/` above (a checked rule).
"""
