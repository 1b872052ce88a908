"""The three services. No service imports another; they share only `shared/`."""
