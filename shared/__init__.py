"""The project's contract (event and command models) and the wiring that every service shares."""
