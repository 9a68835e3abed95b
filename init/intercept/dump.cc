// Implemented by the dump/trace work.
