"""Pure code shared by every getOperate service: message types, subjects, the fold, tag resolution.

Nothing in this package does I/O, so every service folds and resolves exactly the same way.
"""
