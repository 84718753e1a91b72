"""Issue 18, item 17: joining a cluster nothing answers at is one line within a bounded, stated time (Ray itself
retried for over five minutes)."""

import socket
import time

import pytest

from halocut.ir.errors import HalocutError
from halocut.runtime.ray_exec import CONNECT_TIMEOUT_S, _reachable


def test_a_closed_port_is_refused_at_once_and_a_bad_address_is_named():
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(HalocutError, match=rf"cannot join the Ray cluster at 127.0.0.1:{port}: Connection "
                                               rf"refused \(waited at most {CONNECT_TIMEOUT_S:.0f} s\)"):
            _reachable(f"127.0.0.1:{port}")
        assert time.monotonic() - start < CONNECT_TIMEOUT_S
    with pytest.raises(HalocutError, match=r"--address nohost: not HOST:PORT"):
        _reachable("nohost")


def test_a_listening_head_is_reachable():
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        _reachable(f"127.0.0.1:{head.getsockname()[1]}")
