"""Persistence behind one async interface (see `store.base.Store`)."""
