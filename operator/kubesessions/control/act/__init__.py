"""The operator's acting parts, one job each: ``children`` (create, delete, sweep the
children), ``status`` (the Session's status and Events), ``worker`` (every call to a worker),
``pool`` (the warm pools). Each acts on what the controller hands it and tells the controller
what changed; the caches are the controller's."""
