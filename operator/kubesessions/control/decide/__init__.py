"""The operator's pure deciders: functions of the objects they are given, no I/O, no clock
but the one passed in. Imports ``api``, ``common`` and each other only."""
