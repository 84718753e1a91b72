"""Issue 13 without root: what a testbed's CPU caps and link meter decide from a topology alone."""

import pytest

from halocut.runtime import cpu
from halocut.runtime.testbed import bed, measure
from halocut.runtime.testbed.layout import plan_testbed
from halocut.targets.topology import load_topology
from tests.support import ROOT


def test_a_quota_in_the_environment_is_read_and_caps_the_threads(monkeypatch):
    monkeypatch.setenv("HALOCUT_CPU_QUOTA", "0.25,0.01")
    assert cpu.cpu_quota() == (0.25, 0.01)
    assert cpu.usable_cores() == 1
    monkeypatch.setenv("HALOCUT_CPU_QUOTA", "1.5,0.01")
    assert cpu.usable_cores() == min(2, cpu.os.cpu_count())
    monkeypatch.setenv("HALOCUT_CPU_QUOTA", "nonsense")
    assert cpu.cpu_quota() is None


def test_a_capped_profile_takes_the_mean_over_many_periods(monkeypatch):
    from halocut.runtime.profile import QUOTA_PERIODS, _Timer

    monkeypatch.setenv("HALOCUT_CPU_QUOTA", "0.5,0.002")
    timer = _Timer("torch", repeats=2, warmup=0)
    calls = []
    timer._torch = lambda module, inputs: lambda: calls.append(1)
    assert timer.time(None, []) > 0
    assert len(calls) > 2 and "mean over at least" in timer.statistic  # ran until QUOTA_PERIODS periods had passed
    assert QUOTA_PERIODS * 0.002 <= 0.05


@pytest.mark.parametrize("cores, period", [(1.0, 10_000), (0.5, 10_000), (0.05, 20_000), (0.001, 1_000_000)])
def test_the_cfs_period_keeps_the_quota_above_the_kernel_minimum(cores, period):
    assert bed.cpu_period_us(cores) == period
    assert cores * bed.cpu_period_us(cores) >= 1000 or bed.cpu_period_us(cores) == 1_000_000


def test_auto_scale_fits_every_device_into_this_machines_cores(monkeypatch):
    monkeypatch.setattr(bed.os, "cpu_count", lambda: 2)
    assert bed._scale("auto", [1.0, 0.2, 0.2]) == 1.0
    assert bed._scale("auto", [1.0, 1.0, 1.0, 1.0]) == 0.5
    assert bed._scale("1.5", [1.0, 1.0, 1.0]) == 1.5


def test_the_link_meter_names_every_shaped_direction_with_the_class_the_testbed_gave_it():
    topology = load_topology(ROOT / "examples/topologies/testbed-chain.yaml")
    layout = plan_testbed(topology, "m")
    directions = {(d.sender, d.receiver): d for d in measure._directions(layout)}
    assert set(directions) == {("cam", "edge"), ("edge", "cam"), ("edge", "cloud"), ("cloud", "edge")}
    assert directions[("cam", "edge")].classid == "1:10" and directions[("cam", "edge")].rate_bps == 20e6
    assert directions[("edge", "cloud")].rate_bps == 5e6 and directions[("cloud", "edge")].link == "edge--cloud"


def test_htb_class_counters_are_read_from_tc_text():
    text = ("class htb 1:99 root prio 0 rate 20Mbit ceil 20Mbit burst 1600b cburst 1600b \n Sent 888 bytes 12 pkt "
            "(dropped 0, overlimits 0 requeues 0) \n backlog 0b 0p requeues 0\n\nclass htb 1:10 root prio 0 rate "
            "20Mbit ceil 20Mbit burst 1600b \n Sent 337403 bytes 3104 pkt (dropped 0)\n")
    assert measure._CLASS_SENT.findall(text) == [("1:99", "888"), ("1:10", "337403")]
