"""Generic GPU probe over the PCI devices in sysfs (being written)."""
