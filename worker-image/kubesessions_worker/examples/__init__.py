"""Example apps shipped with the worker: echo, counter, stream, slow, model, wedged."""
