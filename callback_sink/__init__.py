"""The top layer: the ``callback-sink`` command line and process composition.

Everything here may import from every other package (``sink``, ``ingress``, ``worker``,
``handlers``, ``easemob``); nothing below imports from here. The developer kit for handler
authors lives here too: :mod:`callback_sink.testing` and the pytest plugin.
"""
