"""The ``halocut`` command line: argument parsing, thin ``drive_*`` functions, one error contract.

A :class:`~halocut.ir.errors.HalocutError` (or a wrong argument) prints one line
``halocut: error: ...`` on stderr and exits with code 2; no traceback.

>>> main(["inspect", "vgg17"])  # prints the one-line error on stderr
2
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from halocut.ir.errors import EXIT_USER_ERROR, HalocutError
from halocut.ir.files import check_output


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise HalocutError(f"{self.prog}: {message}")


def _count(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number in [minimum, maximum]; anything else is argparse's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"{value}: must be {bound}")
        return value
    return parse


def _positive(text: str) -> float:
    """An argparse type: a finite number above zero (NaN and infinity refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="halocut", description="Compile a CNN for a topology of heterogeneous machines.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    inspect = commands.add_parser("inspect", help="table of a model's layers: kind, shape, FLOPs, params, bytes")
    inspect.add_argument("model", help="torchvision or zoo name (vgg16, yolov2, ...) or path/to/file.py:factory")
    inspect.add_argument("--input-shape", help="input shape such as 1,3,224,224 (default: the model's own)")
    inspect.add_argument("--weights", help="local state_dict file (default: random initialisation)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    inspect.set_defaults(drive=drive_inspect)

    topology = commands.add_parser("topology", help="topology files: check one")
    topology_commands = topology.add_subparsers(dest="topology_command", metavar="ACTION", parser_class=_Parser,
                                                required=True)
    check = topology_commands.add_parser("check", help="validate a topology file and print its devices and links")
    check.add_argument("file", help="topology YAML file")
    check.set_defaults(drive=drive_topology_check)

    simulate = commands.add_parser("simulate", help="simulate a plan on a topology: latency, throughput, Gantt chart")
    simulate.add_argument("model", help="model name or path/to/file.py:factory")
    simulate.add_argument("--topology", required=True, help="topology YAML file")
    simulate.add_argument("--plan", help="plan JSON (default: the whole model on the requester)")
    simulate.add_argument("--input-shape", help="input shape (default: the plan's)")
    simulate.add_argument("--requests", type=_count(1), default=8, help="requests in the throughput stream (default 8)")
    simulate.add_argument("--gantt", help="Gantt chart PNG path (default: <model>-<topology>.png)")
    simulate.add_argument("--force", action="store_true", help="replace the output files if they exist")
    simulate.add_argument("--json", action="store_true", help="print one JSON object")
    simulate.set_defaults(drive=drive_simulate)

    plan = commands.add_parser("plan", help="plan a model for a topology and print its simulated latency")
    plan.add_argument("model", help="model name or path/to/file.py:factory")
    plan.add_argument("--topology", required=True, help="topology YAML file")
    plan.add_argument("--planner", default="halocut", help="planner name (default: halocut; a wrong one lists them)")
    plan.add_argument("--input-shape", help="input shape (default: the model's own)")
    plan.add_argument("-o", "--output", help="plan JSON to write")
    plan.add_argument("--force", action="store_true", help="replace the output files if they exist")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.set_defaults(drive=drive_plan)

    build = commands.add_parser("compile", help="compile a model for a topology: one executable per machine + manifest")
    build.add_argument("model", nargs="?", help="model name or path/to/file.py:factory")
    build.add_argument("--topology", help="topology YAML file")
    build.add_argument("--plan", help="plan JSON (default: the planner's)")
    build.add_argument("--planner", default="halocut", help="planner when no --plan is given (default: halocut)")
    build.add_argument("--input-shape", help="input shape (default: the model's own)")
    build.add_argument("--weights", help="local state_dict file")
    build.add_argument("--backends", help="comma-separated backends every device gets instead (onnx,tvm,torch)")
    build.add_argument("--fp16", action="store_true", help="also write FP16 ONNX variants")
    build.add_argument("-o", "--output", default="build", help="build directory (default: build)")
    build.add_argument("--force", action="store_true", help="replace a non-empty build directory")
    build.add_argument("--stop-after", help="stop after this pipeline step")
    build.add_argument("--tune", type=_count(0), default=0, metavar="TRIALS",
                       help="tune this machine's TVM parts with MetaSchedule, TRIALS per part, into the database "
                            "every build shares ($HALOCUT_CACHE/tune/x86; kernels it holds are not tuned again)")
    build.add_argument("--sign", metavar="KEY", help="sign the manifest with this ed25519 key (halocut keygen)")
    build.add_argument("--list-steps", action="store_true", help="list the pipeline's steps and exit")
    build.set_defaults(drive=drive_compile)

    tune = commands.add_parser("tune", help="tune every part's TVM kernels with MetaSchedule into the database every "
                                            "build shares; kernels already there are not tuned again")
    tune.add_argument("model", help="model name or path/to/file.py:factory")
    tune.add_argument("--topology", required=True, help="topology YAML file")
    tune.add_argument("--plan", help="plan JSON (default: the planner's)")
    tune.add_argument("--planner", default="halocut", help="planner when no --plan is given (default: halocut)")
    tune.add_argument("--input-shape", help="input shape (default: the model's own)")
    tune.add_argument("--trials", type=_count(1), default=64,
                      help="MetaSchedule trials per part, spread over its kernels by FLOPs, at least one each "
                           "(default 64); a kernel already tuned with its share is a hit")
    tune.add_argument("--target", default="x86", choices=["x86", "aarch64"],
                      help="target kind; only one this machine runs can be measured (default x86)")
    tune.add_argument("--json", action="store_true", help="print one JSON object per part")
    tune.set_defaults(drive=drive_tune)

    profile = commands.add_parser("profile", help="measure per-layer and per-tile latencies on this machine, or on "
                                                  "a machine of a Ray cluster")
    profile.add_argument("model", help="model name or path/to/file.py:factory")
    profile.add_argument("--device", default="local",
                         help="where to measure: local (this process), or the name of a machine whose Ray node offers "
                              "that resource in the cluster at --address (a board, a testbed machine)")
    profile.add_argument("--address", help="Ray cluster of --device (its head, HOST:PORT)")
    profile.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    profile.add_argument("--input-shape", help="input shape (default: the model's own)")
    profile.add_argument("--repeats", type=_count(1), default=5)
    profile.add_argument("-o", "--output", required=True, help="profile JSON to write")
    profile.add_argument("--force", action="store_true", help="replace the output files if they exist")
    profile.add_argument("--training", action="store_true",
                         help="forward, backward and update seconds per layer group (HierTrain's profile)")
    profile.add_argument("--batch", type=_count(1), default=32, help="samples per training batch (--training; default 32)")
    profile.set_defaults(drive=drive_profile)

    bench = commands.add_parser("bench", help="time a build's artifacts on this machine, against their stages unsplit")
    bench.add_argument("build", help="build directory (with manifest.json)")
    bench.add_argument("--part", action="append", metavar="NAME", help="only this part (repeatable)")
    bench.add_argument("--runtimes", help="comma-separated runtimes to use (onnxruntime,tvm,torch; default all)")
    bench.add_argument("--profile-runtime", help="runtime whose timings fill the profile's layers "
                                                 "(default: the one that timed the most parts)")
    bench.add_argument("--model", help="model to prepare the stages from (default: the manifest's model name)")
    bench.add_argument("--repeats", type=_count(1), default=20, help="timed runs per measurement (default 20)")
    bench.add_argument("--warmup", type=_count(0), default=3, help="untimed runs first (default 3)")
    bench.add_argument("--threads", type=_count(1), help="torch's and TVM's threads while timing (default: theirs)")
    bench.add_argument("-o", "--output", help="bench JSON to write (default: BUILD/bench.json)")
    bench.add_argument("--force", action="store_true", help="replace the output files if they exist")
    bench.add_argument("--json", action="store_true", help="print the bench JSON instead of tables")
    bench.add_argument("--trust", metavar="KEY.pub", help="refuse a build not signed by this key (default: $HALOCUT_TRUST)")
    bench.set_defaults(drive=drive_bench)

    run = commands.add_parser("run", help="run a build on Ray across its machines, verify it, measure it")
    run.add_argument("build", help="build directory (with manifest.json)")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--input", help="an image (resized to the model's input)")
    source.add_argument("--random", action="store_true", help="seeded random inputs (the default)")
    run.add_argument("--requests", type=_count(1), default=20, help="requests per phase (default 20)")
    run.add_argument("--address", help="Ray cluster to join (default: an embedded cluster on this machine)")
    run.add_argument("--threads", type=_count(1), help="threads per actor (default: cores / actors embedded, all on a cluster)")
    run.add_argument("--window", type=_count(1), help="requests in flight in the throughput phase (default: actors + 1)")
    run.add_argument("--plain-api", action="store_true", help="run on the plain Ray DAG API, not a compiled graph")
    run.add_argument("--testbed", nargs="?", const="bed", metavar="NAME",
                     help="run on testbed NAME (default bed) from its requester's namespace, its tensors crossing the "
                          "shaped links; the report adds bytes, busy seconds and achieved rate per link")
    run.add_argument("--model", help="the original model, when the build's model name does not load it")
    run.add_argument("--weights", help="the state_dict the build was compiled with")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--trust", metavar="KEY.pub", help="refuse a build not signed by this key (default: $HALOCUT_TRUST)")
    run.add_argument("--staged", nargs="?", const="", metavar="DIR",
                     help="every machine holds a copy of the build at DIR (default: the build's own absolute path): "
                          "actors read their artifacts there, sha256 checked, instead of receiving them")
    run.set_defaults(drive=drive_run)

    keygen = commands.add_parser("keygen", help="write an ed25519 key pair to sign builds with (KEY, KEY.pub)")
    keygen.add_argument("key", help="private key file to write (the public key goes to KEY.pub)")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    keygen.set_defaults(drive=drive_keygen)

    testbed = commands.add_parser("testbed", help="an emulated testbed on this machine: namespaces, shaped links, "
                                                  "CPU caps, a Ray node per machine (root)")
    testbed_commands = testbed.add_subparsers(dest="testbed_command", metavar="ACTION", parser_class=_Parser,
                                              required=True)
    bed_up = testbed_commands.add_parser("up", help="make the testbed of a topology")
    bed_up.add_argument("topology", help="topology YAML file")
    bed_up.add_argument("--name", default="bed", help="testbed name (1-16 of a-z, 0-9, '-'; default bed)")
    bed_up.add_argument("--cpu-scale", default="auto", help="cores for the fastest device (auto: 1, or less so that every device's share fits this machine's cores)")
    bed_up.add_argument("--no-ray", action="store_true", help="network and CPU caps only, no Ray nodes")
    bed_up.set_defaults(drive=drive_testbed_up)
    bed_status = testbed_commands.add_parser("status", help="the testbeds that exist and what they hold")
    bed_status.add_argument("--json", action="store_true", help="print one JSON object")
    bed_status.set_defaults(drive=drive_testbed_status)
    bed_profile = testbed_commands.add_parser("profile", help="profile a model on every machine of a testbed (in its "
                                                              "cgroup), time its links, write a topology of them")
    bed_profile.add_argument("model", help="model name (it must load in every namespace: a zoo name or a file path)")
    bed_profile.add_argument("--name", default="bed", help="testbed name (default bed)")
    bed_profile.add_argument("-o", "--output", required=True, help="folder for MACHINE.json profiles and topology.yaml")
    bed_profile.add_argument("--input-shape", help="input shape (default: the model's own)")
    bed_profile.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    bed_profile.add_argument("--repeats", type=_count(1), default=5)
    bed_profile.add_argument("--force", action="store_true", help="replace the output files if they exist")
    bed_profile.set_defaults(drive=drive_testbed_profile)
    bed_down = testbed_commands.add_parser("down", help="remove exactly what 'up' made (also after a crashed up)")
    bed_down.add_argument("--name", default="bed", help="testbed name (default bed)")
    bed_down.set_defaults(drive=drive_testbed_down)

    schedule = commands.add_parser("schedule", help="schedule many tasks over edge servers and a cloud (DeePar)")
    schedule.add_argument("--workload", required=True, help="workload YAML (examples/workloads/)")
    schedule.add_argument("--policy", default="deepar", help="deepar (default), device-only, edge-only or cloud-only")
    schedule.add_argument("-o", "--output", help="schedule JSON to write")
    schedule.add_argument("--force", action="store_true", help="replace the output files if they exist")
    schedule.add_argument("--json", action="store_true", help="print the schedule as one JSON object")
    schedule.add_argument("--gantt", help="draw the schedule (PNG)")
    schedule.add_argument("--check", metavar="SCHEDULE", help="replay a schedule JSON against the workload instead: "
                                                                "constraints (8)-(19) at every event instant")
    schedule.add_argument("--run", action="store_true", help="execute the schedule on Ray, verify every output")
    schedule.add_argument("--address", help="Ray cluster to join for --run (default: an embedded cluster)")
    schedule.add_argument("--time-scale", type=_positive, help="wall seconds per scheduled second for --run (default: "
                                                            "the schedule's last end lasts 20 s)")
    schedule.set_defaults(drive=drive_schedule)

    verify = commands.add_parser("verify", help="run a plan beside the model: max error, halo FLOPs, bytes moved")
    verify.add_argument("model", help="model name or path/to/file.py:factory")
    verify.add_argument("--plan", help="plan JSON (halocut plan -o)")
    verify.add_argument("--tiles", help="instead of --plan: an equal ROWSxCOLS grid (DeepThings' FTP), e.g. 2x2")
    verify.add_argument("--fuse-until", help="with --tiles: the last layer of the tiled volume")
    verify.add_argument("--input-shape", help="input shape (default: the model's own)")
    verify.add_argument("--weights", help="local state_dict file (default: random initialisation)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(drive=drive_verify)

    train_plan = commands.add_parser("train-plan", help="plan training across device, edge and cloud (HierTrain)")
    train_plan.add_argument("model", help="model name or path/to/file.py:factory")
    train_plan.add_argument("--topology", required=True, help="topology YAML with a requester, an edge and a cloud")
    train_plan.add_argument("--batch", type=_count(1), required=True, help="samples per iteration, B")
    train_plan.add_argument("--policy", default="hiertrain", help="hiertrain (default), hiertrain-exact, all-edge, "
                                                                  "all-cloud, jointdnn, jointdnn+ or jalad")
    train_plan.add_argument("--compress-bits", type=_count(1, 32), help="bits of what is sent forward over the edge-cloud "
                                                              "link (JALAD's compression; jalad: 8, others: 32)")
    train_plan.add_argument("--input-shape", help="input shape (default: the model's own)")
    train_plan.add_argument("-o", "--output", help="train plan JSON to write")
    train_plan.add_argument("--force", action="store_true", help="replace the output files if they exist")
    train_plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    train_plan.set_defaults(drive=drive_train_plan)

    train = commands.add_parser("train", help="run a train plan on Ray actors and check it against one-process SGD")
    train.add_argument("model", help="model name or path/to/file.py:factory (the plan's)")
    train.add_argument("--topology", required=True, help="topology YAML the plan was made for")
    train.add_argument("--plan", required=True, help="train plan JSON (halocut train-plan -o)")
    train.add_argument("--steps", type=_count(1), default=3, help="iterations (default 3)")
    train.add_argument("--lr", type=_positive, default=0.01, help="SGD learning rate (default 0.01)")
    train.add_argument("--seed", type=_count(0), default=0, help="seed of the synthetic batches (default 0)")
    train.add_argument("--address", help="Ray cluster to join (default: an embedded cluster on this machine)")
    train.add_argument("--threads", type=_count(1), help="torch threads per worker (default: cores / 3 embedded)")
    train.add_argument("--kill", metavar="MACHINE@ITERATION",
                       help="kill that machine's worker once in that iteration (recovery test)")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(drive=drive_train)
    return parser


def drive_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from halocut.compiler.frontend import parse_shape
    from halocut.compiler.inspection import inspect_model

    shape = parse_shape(args.input_shape) if args.input_shape else None
    report = inspect_model(args.model, shape, args.weights)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        Console(width=None if sys.stdout.isatty() else 160).print(report.table())
    return 0


def drive_topology_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from halocut.runtime.report import topology_tables
    from halocut.targets.topology import load_topology

    console = Console(width=None if sys.stdout.isatty() else 160)
    for table in topology_tables(load_topology(args.file)):
        console.print(table)
    return 0


def drive_simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from halocut.compiler.commands import simulate_model

    shape = _shape(args.input_shape)
    result, gantt = simulate_model(args.model, args.topology, args.plan, shape, args.requests, args.gantt, args.force)
    if args.json:
        print(json.dumps({**result.to_json(), "gantt": str(gantt)}))
    else:
        console = Console(width=None if sys.stdout.isatty() else 160)
        from halocut.runtime.report import simulation_table

        console.print(simulation_table(result, f"{args.model} on {Path(args.topology).stem}"))
        console.print(f"Gantt chart: {gantt}")
    return 0


def drive_profile(args: argparse.Namespace) -> int:
    from halocut.compiler.commands import profile_model
    from halocut.runtime.profile import write_profile

    check_output(args.output, args.force)
    if args.training and args.device != "local":
        raise HalocutError("--training: only with --device local")
    if args.training:
        return drive_profile_training(args)
    if args.device == "local":
        if args.address:
            raise HalocutError("--address: only with --device NAME (a machine of that cluster), not local")
        profile = profile_model(args.model, _shape(args.input_shape), args.runtime, args.repeats,
                                progress=sys.stderr.isatty())
    else:
        if not args.address:
            raise HalocutError(f"--device {args.device}: needs --address, the Ray cluster that machine is in")
        from halocut.compiler.commands import profile_model_on

        profile = profile_model_on(args.device, args.address, args.model, _shape(args.input_shape), args.runtime,
                                   args.repeats)
    path = write_profile(profile, args.output, args.force)
    print(f"profiled {len(profile['layers'])} layers of {profile['model']} with {args.runtime} on {args.device} "
          f"({profile['statistic']}): {path}")
    return 0


def drive_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from halocut.compiler.commands import bench_build
    from halocut.runtime.bench import bench_tables, write_bench

    runtimes = [r.strip() for r in args.runtimes.split(",")] if args.runtimes else None
    trust = _trust(args.trust)
    output = check_output(args.output or Path(args.build) / "bench.json", args.force)  # before the timings, not after
    result = bench_build(args.build, args.part, args.model, runtimes, args.profile_runtime, args.repeats,
                         args.warmup, args.threads, progress=sys.stderr.isatty(), trust=trust)
    path = write_bench(result, output, args.force)
    _warn_if_unchecked(args.build, trust)
    if args.json:
        print(json.dumps(result))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 160)
    for table in bench_tables(result):
        console.print(table)
    print(f"bench: {path}")
    return 0


def drive_plan(args: argparse.Namespace) -> int:
    from halocut.compiler.commands import plan_model

    if args.output:
        check_output(args.output, args.force)
    result = plan_model(args.model, args.topology, args.planner, _shape(args.input_shape))
    if args.output:
        result.plan.save(args.output, args.force)
    report = {"planner": args.planner, "latency_s": result.simulation.latency_s,
              "throughput_ips": result.simulation.throughput_ips, "planning_time_s": result.planning_time_s,
              "lower_bound_s": result.simulation.lower_bound_s, "stages": len(result.plan.stages)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.planner}: latency {report['latency_s'] * 1e3:.2f} ms, throughput {report['throughput_ips']:.2f} "
              f"img/s, lower bound {report['lower_bound_s'] * 1e3:.2f} ms, {report['stages']} stage(s), planned in "
              f"{report['planning_time_s']:.2f} s" + (f"; written to {args.output}" if args.output else ""))
    return 0


def drive_compile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from halocut.compiler.driver import STEPS, CompileOptions, compile_model, summary_table

    if args.list_steps:
        print("\n".join(name for name, _ in STEPS))
        return 0
    if not args.model or not args.topology:
        raise HalocutError("halocut compile: a model and --topology are required")
    backends = tuple(b.strip() for b in args.backends.split(",")) if args.backends else None
    options = CompileOptions(args.model, args.topology, args.output, args.plan, args.planner, _shape(args.input_shape),
                             args.weights, backends, args.force, args.fp16, args.stop_after, sys.stderr.isatty(),
                             args.tune, args.sign)
    compilation = compile_model(options)
    Console(width=None if sys.stdout.isatty() else 160).print(summary_table(compilation))
    if compilation.manifest_path:
        print(f"manifest: {compilation.manifest_path}")
    return 0


def drive_tune(args: argparse.Namespace) -> int:
    from halocut.compiler.commands import tune_model
    from halocut.compiler.driver import tuning_line

    reports = tune_model(args.model, args.topology, args.trials, args.target, args.plan, args.planner,
                         _shape(args.input_shape), progress=sys.stderr.isatty())
    for report in reports:
        if args.json:
            print(json.dumps({"part": report.part, "database": str(report.database), "hits": report.hits,
                              "trials_run": report.trials_run, "kernels": [
                                  {"name": t.name, "flops": t.flops, "calls": t.calls, "trials": t.trials_wanted,
                                   "trials_run": t.trials_run, "best_s": t.best_s} for t in report.tasks]}))
        else:
            print(report.summary())
    if not args.json:
        print(tuning_line(reports))
    return 0


def drive_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from halocut.compiler.commands import run_build
    from halocut.runtime.run import RunOptions, run_table, verified_line

    staged = None if args.staged is None else (args.staged or str(Path(args.build).resolve()))
    options = RunOptions(args.build, args.input, args.requests, args.address, args.threads, not args.plain_api,
                         args.model, args.weights, window=args.window, trust=_trust(args.trust), staged=staged)
    if args.testbed:
        from halocut.compiler.commands import run_on_testbed

        if args.address:
            raise HalocutError("--testbed: joins the testbed's own Ray head; give no --address")
        report = run_on_testbed(options, args.testbed)  # the run in the namespace warned if unchecked
    else:
        report = run_build(options)
        _warn_if_unchecked(args.build, options.trust)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        from halocut.runtime.run import links_table

        print(verified_line(report))
        console = Console(width=None if sys.stdout.isatty() else 160)
        console.print(run_table(report))
        if report.links:
            console.print(links_table(report))
    return 0


def _trust(trust: str | None):
    """The trusted public key: ``--trust``, else ``$HALOCUT_TRUST`` (None: the build is read unchecked, and says so)."""
    from halocut.backends.signing import trusted_key_path

    return trusted_key_path(trust)


def _warn_if_unchecked(build: str, trust) -> None:
    """After a run or bench of a build read without a trusted key: one line on stderr saying so (a refusal, by
    contrast, is its own one line)."""
    from halocut.backends.signing import warn_unchecked

    if trust is None:
        warn_unchecked(build)


def drive_keygen(args: argparse.Namespace) -> int:
    from halocut.backends.signing import key_id, keygen

    private, public = keygen(args.key, args.force)
    print(f"private key: {private} (mode 0600; sign with halocut compile --sign {private})")
    print(f"public key: {public} (id {key_id(public.read_bytes())}; trust with halocut run --trust {public})")
    return 0


def drive_testbed_up(args: argparse.Namespace) -> int:
    from halocut.runtime.testbed.bed import up

    state = up(args.topology, args.name, args.cpu_scale, ray=not args.no_ray)
    if state.head:
        print(f"Ray head at {state.head}; run a build from the requester's namespace: ip netns exec "
              f"{state.head_namespace} env RAY_AUTH_MODE=disabled halocut run BUILD --address {state.head} "
              f"--plain-api")
    return 0


def drive_testbed_status(args: argparse.Namespace) -> int:
    from halocut.runtime.testbed.bed import status

    beds = status()
    if args.json:
        print(json.dumps({"testbeds": beds}))
        return 0
    if not beds:
        print("no testbed")
    for bed in beds:
        missing = f", missing namespaces {bed['namespaces_missing']}" if bed["namespaces_missing"] else ""
        print(f"{bed['name']}: {'ready' if bed['ready'] else 'NOT ready (a crashed up?)'}, topology "
              f"{bed['topology']}, head {bed['head'] or '-'}, {bed['processes_alive']}/{bed['processes']} "
              f"processes alive{missing}; link latency {'netem' if bed['netem'] else 'not emulated'}")
        for machine, info in bed["machines"].items():
            print(f"  {machine}: namespace {info['namespace']}, address {info['address']}, "
                  f"{info.get('cores', 0):.2f} cores")
    return 0


def drive_testbed_profile(args: argparse.Namespace) -> int:
    from halocut.runtime.testbed.bed import State, require_root
    from halocut.runtime.testbed.measure import profile_testbed

    require_root()
    _shape(args.input_shape)  # a bad shape is refused here, not in the first namespace
    path = profile_testbed(State.load(args.name), args.model, args.output, args.input_shape, args.runtime,
                           args.repeats, args.force)
    print(f"plan and compile for the testbed itself with --topology {path}")
    return 0


def drive_testbed_down(args: argparse.Namespace) -> int:
    from halocut.runtime.testbed.bed import down

    down(args.name)
    return 0


def drive_schedule(args: argparse.Namespace) -> int:
    from halocut.compiler.scheduling import check_schedule_file, schedule_file

    if args.check:
        if args.run or args.output or args.gantt:
            raise HalocutError("halocut schedule: --check replays a schedule; it takes no --run, -o or --gantt")
        schedule, instants = check_schedule_file(args.check, args.workload)
        print(f"{args.check}: {len(schedule.tasks)} tasks satisfy constraints (8)-(19) at all {instants} event "
              f"instants of {args.workload}")
        return 0
    for path, flag in ((args.output, "-o"), (args.gantt, "--gantt")):
        if path:
            check_output(path, args.force, flag)
    schedule, costs = schedule_file(args.workload, args.policy)
    if args.output:
        schedule.save(args.output, args.force)
    if args.gantt:
        from halocut.runtime.gantt import plot_schedule

        plot_schedule(schedule, args.gantt, force=args.force)
    measured = None
    if args.run:
        from halocut.compiler.scheduling import run_schedule

        measured = run_schedule(schedule, costs, args.address, args.time_scale, progress=sys.stderr.isatty())
    data = schedule.to_json() if measured is None else {**schedule.to_json(), "run": measured.to_json()}
    if args.json:
        print(json.dumps(data))
        return 0
    from rich.console import Console

    from halocut.runtime.report import schedule_table

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(schedule_table(schedule))
    decisions = sorted(t.decision_s for t in schedule.tasks)
    print(f"{schedule.policy}: total delay {schedule.total_delay_s:.4g} s over {len(schedule.tasks)} tasks; scheduled "
          f"in {schedule.scheduling_time_s:.3f} s (per task: median {decisions[len(decisions) // 2] * 1e3:.2f} ms, "
          f"worst {decisions[-1] * 1e3:.2f} ms)" + (f"; written to {args.output}" if args.output else "")
          + (f"; Gantt chart: {args.gantt}" if args.gantt else ""))
    if measured is not None:
        from halocut.runtime.schedule_run import run_line, run_table

        console.print(run_table(measured))
        print(run_line(measured))
    if measured is not None and not all(t.verified for t in measured.tasks):
        wrong = next(t for t in measured.tasks if not t.verified)
        raise HalocutError(f"task '{wrong.name}': its output differs from the model's by {wrong.max_error:.3g} "
                           f"(tolerance {wrong.tolerance:.3g})")
    return 0


def drive_verify(args: argparse.Namespace) -> int:
    from halocut.compiler.verification import parse_tiles, verify_model

    tiles = parse_tiles(args.tiles) if args.tiles else None
    report = verify_model(args.model, args.plan, tiles, args.fuse_until, _shape(args.input_shape), args.weights)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        verdict = "equivalent" if report.ok else "NOT equivalent"
        print(f"{report.model} {'x'.join(map(str, report.input_shape))}, {report.plan}: {verdict}, max abs error "
              f"{report.max_abs_error:.3g} (tolerance {report.tolerance:.3g}); {report.stages} stages, {report.parts} "
              f"parts; halo FLOP overhead {report.halo_flop_overhead:.1%} ({report.parts_flops:,} vs "
              f"{report.model_flops:,} FLOPs); {report.bytes_moved:,} bytes read by the parts")
    return 0 if report.ok else 1


def drive_profile_training(args: argparse.Namespace) -> int:
    from halocut.compiler.commands import profile_training_model
    from halocut.runtime.profile import write_profile

    profile = profile_training_model(args.model, _shape(args.input_shape), args.batch, args.repeats)
    path = write_profile(profile, args.output, args.force)
    groups = profile["training"]["groups"]
    for group in groups:
        print(f"{group['name']:>16}: forward {group['forward_s'] * 1e3:8.2f} ms, backward {group['backward_s'] * 1e3:8.2f}"
              f" ms, update {group['update_s'] * 1e3:7.2f} ms, MO {group['output_bytes']} B, MP {group['param_bytes']} B")
    print(f"profiled {len(groups)} layer groups of {profile['model']} for training at batch {args.batch}: {path}")
    return 0


def drive_train_plan(args: argparse.Namespace) -> int:
    from halocut.compiler.commands import train_plan_model

    if args.output:
        check_output(args.output, args.force)
    plan = train_plan_model(args.model, args.topology, args.batch, args.policy, _shape(args.input_shape),
                            args.compress_bits)
    if args.output:
        plan.save(args.output, args.force)
    data = plan.to_json()
    if args.json:
        print(json.dumps(data))
        return 0
    if plan.is_hiertrain:
        print(f"{plan.policy}: T_total {data['t_total_s']:.3f} s per iteration of {plan.batch} samples; mapping "
              f"o={plan.mapping['o']} s={plan.mapping['s']} l={plan.mapping['l']}, m_s={plan.m_s}, m_l={plan.m_l}, "
              f"b_o={plan.b[0]} b_s={plan.b[1]} b_l={plan.b[2]}")
    else:
        print(f"{plan.policy}: T_total {data['t_total_s']:.3f} s per iteration of {plan.batch} samples; groups on "
              + " -> ".join(plan.chain))
    for name, worker in data["per_worker"].items():
        sends = ", ".join(f"{size / 1e3:.1f} kB to {target}" for target, size in worker["sends_bytes"].items())
        print(f"  {name} ({worker['role']}): {worker.get('task', '-')} layers {worker['layers'] or 'none'}, "
              f"{worker['samples']} samples, sends {sends or 'nothing'}")
    print(f"planned in {data['planning_time_s']:.3f} s" + (f"; written to {args.output}" if args.output else ""))
    return 0


def drive_train(args: argparse.Namespace) -> int:
    from halocut.compiler.commands import train_model

    kill = None
    if args.kill:
        machine, _, iteration = args.kill.rpartition("@")
        if not machine or not iteration.isdigit():
            raise HalocutError(f"--kill {args.kill}: expected MACHINE@ITERATION such as edge@2")
        kill = (machine, int(iteration))
    result = train_model(args.model, args.topology, args.plan, args.steps, args.lr, args.seed, args.address,
                         args.threads, kill)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        links = ", ".join(f"{link} {size / 1e3:.1f} kB" for link, size in result.bytes_per_link.items())
        compute = ", ".join(f"{m} {s * 1e3:.1f} ms" for m, s in result.compute_s.items())
        predicted = result.predicted_t_total_s
        print(f"trained {result.steps} iterations: {result.seconds_per_iteration * 1e3:.1f} ms per iteration (median)"
              + (f", planned T_total {predicted * 1e3:.1f} ms" if predicted is not None else ""))
        print(f"  per iteration: {links}; compute {compute}; losses {', '.join(f'{x:.4f}' for x in result.losses)}")
        for recovery in result.recoveries:
            print(f"  recovered from {recovery['error']}: restarted {', '.join(recovery['restarted']) or 'none'}, "
                  f"redid iteration {recovery['restored_iteration'] + 1} ({recovery['seconds']:.2f} s)")
        verdict = "equals" if result.equivalent else "DIFFERS FROM"
        print(f"{verdict} single-process SGD: max parameter difference {result.max_param_error:.2e} "
              f"(rtol 1e-05, atol 4e-05)")
    return 0 if result.equivalent else 1


def _shape(text: str | None):
    from halocut.compiler.frontend import parse_shape

    return parse_shape(text) if text else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``halocut`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USER_ERROR
        return args.drive(args)
    except HalocutError as error:
        print(f"halocut: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("halocut: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
