"""Qt dock widgets (the only part of the plugin that imports Qt)."""
