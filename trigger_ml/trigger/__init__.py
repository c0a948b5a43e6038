"""The trigger on top of the emulated firmware: thresholds (rate → raw score), working-point menus,
pure rate against reference seeds, event catalogs, and the ``emulate`` stage that runs them on files."""
