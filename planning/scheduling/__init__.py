"""Multi-task scheduling (paper 000, DeePar Sec. III-IV): many tasks from many mobile devices over time,
competing for edge servers of limited capacity and for bandwidth budgets.

- :mod:`.costs`: eqs. 1-6 per resource choice, the best two cuts for given bandwidths (the matrix W);
- :mod:`.online`: Algorithm 1 (online, delayed scheduling) and the baselines, :func:`schedule_workload`;
- :mod:`.replay`: the checker of constraints (8)-(19) at every event instant, :func:`check_schedule`.

>>> from halocut.planning.scheduling.online import POLICIES
>>> list(POLICIES)
['deepar', 'device-only', 'edge-only', 'cloud-only']
"""
