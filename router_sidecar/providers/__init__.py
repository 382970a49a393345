"""Provider adapters: one per wire protocol, behind one interface."""
