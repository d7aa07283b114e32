"""What every results file records about the machine: enough to tell two machines of one platform apart."""
import torch

from benchmarks.provenance import machine, provenance
from cflight.benchmark.runner import cpu_model


def test_machine_names_the_cpu_model_and_torchs_simd_level():
    info = machine()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["cpu_model"] == cpu_model()
    assert info["cpu_count"] >= 1 and info["threads"] == torch.get_num_threads()
    record = provenance(__file__, ["--n", "4"])
    assert record["command"].endswith("tests/benchmarks/test_provenance.py --n 4") and record["machine"] == info


def test_cpu_model_reads_proc_cpuinfo(tmp_path, monkeypatch):
    import builtins

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(cpuinfo if p == "/proc/cpuinfo" else p, *a, **k))
    assert cpu_model() == "Example CPU @ 2.0GHz"
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: (_ for _ in ()).throw(OSError("no procfs")))
    assert cpu_model() is None


def test_cflight_benchmark_and_the_benchmark_scripts_record_one_machine():
    from cflight.benchmark.runner import provenance as job_provenance

    rec = job_provenance(["benchmark", "-c", "x.yaml"])
    assert rec["command"] == "cflight benchmark -c x.yaml"
    assert {k: v for k, v in rec["machine"].items() if k != "load_average_1_5_15_at_end"} == machine()
    assert machine()["omp_num_threads"] == __import__("os").environ.get("OMP_NUM_THREADS")
