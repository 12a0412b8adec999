"""A three-host testbed on one machine: load generator, edge and cloud in network namespaces,
joined by veth links whose edge<->cloud profile (tc netem) changes during a run.

* :mod:`~ddnn.testbed.topology` — namespaces, veths, addresses; :class:`Testbed` always cleans up.
* :mod:`~ddnn.testbed.profiles` — link profiles as data (``profiles.json``) and their tc arguments.
* :mod:`~ddnn.testbed.shaper` — netem, or tbf + :mod:`~ddnn.testbed.delayer` on kernels without netem.
* :mod:`~ddnn.testbed.runner` — the run; :mod:`~ddnn.testbed.report` — JSON, Markdown, plot.
"""
