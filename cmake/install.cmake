# Install rules and the exported CMake package (filled in by the library issue).
