"""An emulated testbed on one Linux machine: a network namespace, shaped links, a CPU cgroup and a Ray node per
topology machine (:mod:`.layout` decides names, addresses, routes and rates; :mod:`.bed` makes and removes them;
:mod:`.links` measures what crossed each link)."""
